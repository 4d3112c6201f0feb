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
