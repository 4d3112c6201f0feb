import { chmod } from "node:fs/promises";
import type { Database } from "./database.js";
import { migrate } from "./migrations.js";

/** A bare connection with the driver of the runtime we are on: no pragmas, no migrations. */
export async function openSqliteFile(path: string): Promise<Database> {
  return process.versions.bun ? (await import("./sqlite-bun.js")).openBunSqlite(path) : (await import("./sqlite-node.js")).openNodeSqlite(path);
}

/**
 * The database holds tokens' hashes, logs and sealed secrets: owner only, whatever the
 * umask, and fixed on every open for installs made before. SQLite gives -wal and -shm
 * the main file's mode when it creates them.
 */
async function restrictModes(path: string): Promise<void> {
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    await chmod(file, 0o600).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "ENOENT") throw error;
    });
  }
}

/**
 * Opens (creating if needed) the daemon's database with the driver of the runtime we are
 * on, sets WAL + synchronous=NORMAL and checks that they took, then migrates.
 */
export async function openDatabase(path: string): Promise<Database> {
  const db = await openSqliteFile(path);
  try {
    // Opening created the file; the WAL files come with the first pragma below.
    if (path !== ":memory:") await restrictModes(path);
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
    if (path !== ":memory:") await restrictModes(path);
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}
