import { rmSync } from "node:fs";
import { chmod, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Database } from "./database.js";
import { openSqliteFile } from "./open-database.js";

/** Another daemon holds the data dir. */
export class DataDirLockedError extends Error {
  override name = "DataDirLockedError";
  constructor(
    readonly dataDir: string,
    readonly holderPid: number | null,
  ) {
    super(
      `the data dir ${dataDir} is in use by another paddock daemon (${holderPid === null ? "pid not known yet" : `pid ${holderPid}`}); ` +
        "stop that one first, or give this one another --data-dir",
    );
  }
}

/** Held connections: a lock must not end because its holder forgot the handle and GC closed it. */
const held = new Set<Database>();

export interface DataDirLock {
  /** Gives the data dir up; the lock also ends when this process dies, however it dies. */
  release(): void;
}

/**
 * One daemon per data dir. Node has no flock, so the lock is SQLite's own on a file of
 * its own: an EXCLUSIVE locking-mode connection that has written keeps its exclusive POSIX
 * lock until it closes, and the kernel drops that lock when the process dies (SIGKILL
 * included), so a crash leaves nothing to clean. Both drivers take the same lock, so the
 * Node and compiled daemons exclude each other too. daemon.pid, written once the lock is
 * held, is only for the message a second daemon prints.
 *
 * Nothing else in this process may open and close daemon.lock: closing any descriptor of a
 * file drops every POSIX lock the process holds on it.
 */
export async function lockDataDir(dataDir: string): Promise<DataDirLock> {
  const lockPath = join(dataDir, "daemon.lock");
  const pidPath = join(dataDir, "daemon.pid");
  let db: Database | undefined;
  try {
    db = await openSqliteFile(lockPath);
    db.exec("PRAGMA busy_timeout = 0");
    db.exec("PRAGMA locking_mode = EXCLUSIVE");
    // No journal file next to the lock: there is nothing in it worth a rollback.
    db.exec("PRAGMA journal_mode = MEMORY");
    db.exec("BEGIN EXCLUSIVE");
    db.exec("CREATE TABLE IF NOT EXISTS holder (pid INTEGER NOT NULL)");
    db.exec(`DELETE FROM holder; INSERT INTO holder (pid) VALUES (${process.pid})`);
    db.exec("COMMIT");
  } catch (error) {
    db?.close();
    if (!isBusy(error)) throw error;
    throw new DataDirLockedError(dataDir, await readPid(pidPath));
  }
  const conn = db;
  held.add(conn);
  try {
    await chmod(lockPath, 0o600);
    await writeFile(pidPath, `${process.pid}\n`, { mode: 0o600 });
    await chmod(pidPath, 0o600);
  } catch (error) {
    held.delete(conn);
    conn.close();
    throw error;
  }
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      // The pid file first: once the lock is gone another daemon may write its own.
      rmSync(pidPath, { force: true });
      held.delete(conn);
      conn.close();
    },
  };
}

function isBusy(error: unknown): boolean {
  const e = error as { code?: unknown; message?: unknown } | null;
  // better-sqlite3 and bun:sqlite both name the SQLite result code; the message is the fallback.
  return (typeof e?.code === "string" && e.code.startsWith("SQLITE_BUSY")) || /database is locked/.test(String(e?.message));
}

async function readPid(path: string): Promise<number | null> {
  try {
    const pid = Number((await readFile(path, "utf8")).trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}
