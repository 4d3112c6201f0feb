import type { SnapshotStart } from "../sandbox/provider.js";
import type { Database } from "./database.js";

export type SnapshotStatus = "in_progress" | "complete" | "error";

export interface SnapshotRecord extends SnapshotStart {
  externalId: string;
  status: SnapshotStatus;
  error: string;
  sizeBytes: number;
  createdAt: number;
  lastUsedAt: number;
}

interface Row {
  id: string;
  provider: string;
  snapshot_key: string;
  repository: string;
  commit_sha: string;
  setup_hash: string;
  base_image_id: string;
  paddock_version: string;
  environment_id: string;
  external_id: string;
  status: SnapshotStatus;
  error: string;
  size_bytes: number;
  created_at: number;
  last_used_at: number;
}

const toRecord = (r: Row): SnapshotRecord => ({
  id: r.id,
  provider: r.provider,
  key: r.snapshot_key,
  repository: r.repository,
  commit: r.commit_sha,
  setupHash: r.setup_hash,
  baseImageId: r.base_image_id,
  paddockVersion: r.paddock_version,
  environmentId: r.environment_id,
  externalId: r.external_id,
  status: r.status,
  error: r.error,
  sizeBytes: r.size_bytes,
  createdAt: r.created_at,
  lastUsedAt: r.last_used_at,
});

export function createSnapshotsRepository(db: Database) {
  const newest = db.prepare<Row>(
    "SELECT * FROM sandbox_snapshots WHERE provider = ? AND snapshot_key = ? AND status = 'complete' ORDER BY created_at DESC LIMIT 1",
  );
  const inProgress = db.prepare<Row>("SELECT * FROM sandbox_snapshots WHERE provider = ? AND snapshot_key = ? AND status = 'in_progress'");
  const insert = db.prepare(`INSERT INTO sandbox_snapshots (id, provider, snapshot_key, repository, commit_sha, setup_hash, base_image_id, paddock_version,
      environment_id, status, created_at, last_used_at)
    VALUES (:id, :provider, :key, :repository, :commit, :setupHash, :baseImageId, :paddockVersion, :environmentId, 'in_progress', :now, :now)`);
  const finish = db.prepare("UPDATE sandbox_snapshots SET status = ?, external_id = ?, size_bytes = ?, error = ? WHERE id = ?");
  const touch = db.prepare("UPDATE sandbox_snapshots SET last_used_at = ? WHERE id = ?");
  const all = db.prepare<Row>("SELECT * FROM sandbox_snapshots WHERE provider = ? ORDER BY last_used_at DESC");
  const byId = db.prepare<Row>("SELECT * FROM sandbox_snapshots WHERE id = ?");
  const remove = db.prepare("DELETE FROM sandbox_snapshots WHERE id = ?");
  return {
    newestComplete(provider: string, key: string): SnapshotRecord | undefined {
      const r = newest.get([provider, key]);
      return r && toRecord(r);
    },
    /** Starts a snapshot unless one for the key is already being taken; returns null then. */
    begin(s: SnapshotStart): SnapshotRecord | null {
      return db.transaction(() => {
        if (inProgress.get([s.provider, s.key])) return null;
        insert.run({ ...s, now: Date.now() });
        return toRecord(byId.get([s.id])!);
      });
    },
    get(id: string): SnapshotRecord | undefined {
      const r = byId.get([id]);
      return r && toRecord(r);
    },
    complete(id: string, externalId: string, sizeBytes: number): void {
      finish.run(["complete", externalId, sizeBytes, "", id]);
    },
    fail(id: string, error: string): void {
      finish.run(["error", "", 0, error.slice(0, 2000), id]);
    },
    touch(id: string): void {
      touch.run([Date.now(), id]);
    },
    /** Most recently used first. */
    list(provider: string): SnapshotRecord[] {
      return all.all([provider]).map(toRecord);
    },
    remove(id: string): void {
      remove.run([id]);
    },
  };
}
export type SnapshotsRepository = ReturnType<typeof createSnapshotsRepository>;
