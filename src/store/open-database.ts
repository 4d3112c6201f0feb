import type { Database } from "./database.js";
import { migrate } from "./migrations.js";

/**
 * Opens (creating if needed) the daemon's database with the driver of the runtime we are
 * on, sets WAL + synchronous=NORMAL and checks that they took, then migrates.
 */
export async function openDatabase(path: string): Promise<Database> {
  const db = process.versions.bun
    ? (await import("./sqlite-bun.js")).openBunSqlite(path)
    : (await import("./sqlite-node.js")).openNodeSqlite(path);
  try {
    db.exec("PRAGMA journal_mode = WAL");
    // bun:sqlite defaults to FULL, about 50x slower commits; NORMAL is durable in WAL
    // except for the last transactions on power loss, never corrupt.
    db.exec("PRAGMA synchronous = NORMAL");
    db.exec("PRAGMA foreign_keys = ON");
    db.exec("PRAGMA busy_timeout = 5000");
    const journal = String(db.pragma("journal_mode")).toLowerCase();
    const sync = Number(db.pragma("synchronous"));
    if (path !== ":memory:" && journal !== "wal") {
      throw new Error(`SQLite at ${path}: journal_mode is ${journal}, expected wal`);
    }
    if (sync !== 1) throw new Error(`SQLite at ${path}: synchronous is ${sync}, expected 1 (NORMAL)`);
    migrate(db);
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}
