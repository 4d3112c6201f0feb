import { randomBytes } from "node:crypto";
import type { Database } from "./database.js";

/**
 * This daemon's instance id, made on first start and kept in the database: every sandbox
 * is labelled with it, so a reaper never touches another daemon's.
 */
export function instanceId(db: Database): string {
  const row = db.prepare<{ value: string }>("SELECT value FROM meta WHERE key = 'instance_id'").get();
  if (row) return row.value;
  const id = randomBytes(8).toString("hex");
  db.prepare("INSERT INTO meta (key, value) VALUES ('instance_id', ?)").run([id]);
  return id;
}

/**
 * Proves the store takes writes now (for /readyz): one small row rewritten, which also
 * fails on a closed connection, a read-only file or a full disk.
 */
export function probeWritable(db: Database): void {
  db.prepare("INSERT INTO meta (key, value) VALUES ('ready_probe', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value").run([String(Date.now())]);
}
