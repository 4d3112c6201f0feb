import { createWriteStream } from "node:fs";
import { mkdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { EXPORT_REF } from "../agent/export-work.js";
import { SandboxError } from "../errors.js";
import { unbundleChecked } from "./checked-bundle.js";
import { git } from "./git.js";
import type { CleanupResult } from "./provider.js";
import type { RunnerClient } from "./runner-client.js";

/**
 * The host's git when it takes in a sandbox's work: the bundle is data, never code, so no
 * hooks and every object checked. Runs only in the daemon's copy of the repository (the
 * user's own, or our mirror), never in a tree the sandbox made.
 */
export const HOST_GIT_CONFIG = ["-c", "core.hooksPath=/dev/null", "-c", "fetch.fsckObjects=true", "-c", "transfer.fsckObjects=true"];

/**
 * Takes the agent's work out through its runner: the runner stops the agent and makes a
 * bundle inside the sandbox; the bundle lands in `scratch` (made here, removed after: the
 * sandbox's own place under the data dir, which a cleanup retried after a crash reuses) and
 * is imported.
 */
export async function collectWork(runner: RunnerClient, o: { source: string; resultBranch: string; scratch: string; signal: AbortSignal; timeout: AbortSignal }): Promise<CleanupResult> {
  const dir = o.scratch;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  try {
    const file = join(dir, "work.bundle");
    const work = await runner.exportWork((body) => pipeline(body, createWriteStream(file, { mode: 0o600 })), o.timeout);
    const bundled = (await stat(file).catch(() => null))?.size ? file : null;
    return await importWork({ source: o.source, resultBranch: o.resultBranch, bundle: bundled, head: work.head, agentBranch: work.branch, signal: o.signal });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Puts the sandbox's work on the run's branch of the host repository, and on nothing else:
 * `refs/heads/<resultBranch>` is created or fast-forwarded, whatever the sandbox says about
 * other refs. The result is the commit now on that branch.
 */
export async function importWork(o: { source: string; resultBranch: string; bundle: string | null; head: string; agentBranch: string; signal: AbortSignal }): Promise<CleanupResult> {
  const ref = `refs/heads/${o.resultBranch}`;
  const hostGit = (...args: string[]) => git([...HOST_GIT_CONFIG, ...args], { cwd: o.source, signal: o.signal });
  if (!/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(o.head)) throw new SandboxError("the sandbox named no commit as its work", false);
  if (o.bundle) {
    // Every object through `git index-pack --strict` (git's fetch from a bundle checks
    // none, whatever fetch.fsckObjects says); no ref is set here, only the run's own below.
    const { [EXPORT_REF]: exported } = await unbundleChecked({ cwd: o.source, bundle: o.bundle, refs: { [EXPORT_REF]: null }, git: (args) => hostGit(...args), signal: o.signal });
    if (exported !== o.head) throw new SandboxError(`the sandbox named ${o.head.slice(0, 12)} as its work but its bundle holds ${exported!.slice(0, 12)}`, false);
  }
  // The work is a commit the repository now has (or had: the agent changed nothing).
  await hostGit("cat-file", "-e", `${o.head}^{commit}`).catch(() => {
    throw new SandboxError(`the sandbox named ${o.head.slice(0, 12)} as its work, which the repository does not have`, false);
  });
  // The run's branch is created, or moved only forward; nothing else changes.
  const old = await hostGit("rev-parse", "--verify", "--quiet", ref).catch(() => "");
  if (!old) await hostGit("update-ref", ref, o.head, "");
  else if (old !== o.head) {
    await hostGit("merge-base", "--is-ancestor", old, o.head).catch(() => {
      throw new SandboxError(`the sandbox's work ${o.head.slice(0, 12)} does not fast-forward ${o.resultBranch}`, false);
    });
    await hostGit("update-ref", ref, o.head, old);
  }
  const resultCommit = await hostGit("rev-parse", "--verify", `${ref}^{commit}`);
  const notes: string[] = [];
  if (o.agentBranch !== o.resultBranch) {
    const where = o.agentBranch ? `on branch ${printable(o.agentBranch)}` : "detached";
    notes.push(`the agent left its branch ${o.resultBranch} (its HEAD was ${where}); the result is that HEAD, with any uncommitted work`);
  }
  return { resultCommit, notes };
}

/** A sandbox-given name for a log line: no control characters, bounded length. */
function printable(name: string): string {
  const clean = name.replace(/[^\x20-\x7e]/g, "?");
  return clean.length > 200 ? clean.slice(0, 200) + "…" : clean;
}
