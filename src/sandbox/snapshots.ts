import { createHash, randomBytes } from "node:crypto";
import { PADDOCK_VERSION } from "../version.js";
import { git } from "./git.js";
import type { SandboxSpec, SnapshotStore } from "./provider.js";

export interface SnapshotKeyParts {
  /** The base image's id (sha256:…), not its tag: a rebuilt image under the same tag is another. */
  baseImageId: string;
  paddockVersion: string;
  repositoryUrl: string;
  setupHash: string;
  /** Setup may write the environment's secrets to disk: a snapshot never crosses environments. */
  environmentId: string;
  /** The operator's CA certificates, which setup may have built into the sandbox; "" for none. */
  caHash: string;
}

/** Runs share a snapshot only when everything it was made from is the same. */
export function snapshotKey(k: SnapshotKeyParts): string {
  const parts = [k.baseImageId, k.paddockVersion, k.repositoryUrl, k.setupHash, k.environmentId, k.caHash];
  return createHash("sha256").update(parts.join("\0")).digest("hex").slice(0, 24);
}

/**
 * Takes the key's snapshot once, for any provider: a row in progress first (a second run
 * of the key taking one meanwhile makes this a no-op), then `take`, then the row complete
 * or failed. A failure is said through `progress` and is not fatal: runs start cold.
 */
export async function takeSnapshotOnce(
  o: { store: SnapshotStore; provider: string; key: string; spec: SandboxSpec; source: string | undefined; baseImageId: string; progress: (line: string) => void; signal: AbortSignal },
  take: (rowId: string, commit: string) => Promise<{ image: string; sizeBytes: number }>,
): Promise<void> {
  const { store, spec, signal } = o;
  if (store.newestComplete(o.provider, o.key)) return; // another run of the key took one meanwhile
  const commit = o.source ? await git(["rev-parse", `${spec.branch || "HEAD"}^{commit}`], { cwd: o.source, signal }).catch(() => "") : "";
  const row = store.begin({
    id: `snap_${randomBytes(8).toString("hex")}`,
    provider: o.provider,
    key: o.key,
    repository: spec.repositoryUrl,
    commit,
    setupHash: spec.setupHash ?? "",
    baseImageId: o.baseImageId,
    paddockVersion: PADDOCK_VERSION,
    environmentId: spec.environmentId ?? "",
  });
  if (!row) return; // another run of the key is taking it
  try {
    const { image, sizeBytes } = await take(row.id, commit);
    store.complete(row.id, image, sizeBytes);
    o.progress(`snapshot ${image} taken after setup for the next runs of this repository`);
  } catch (error) {
    store.fail(row.id, (error as Error).message);
    if (signal.aborted) throw error;
    o.progress(`snapshot failed (runs start cold): ${(error as Error).message}`);
  }
}
