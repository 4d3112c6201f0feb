import { Database as BunDatabase } from "bun:sqlite";
import { joiningTransaction, type Database, type SqlParams, type Statement } from "./database.js";

/** bun:sqlite adapter: the compiled binary only (bun:sqlite does not exist under Node). */
export function openBunSqlite(path: string): Database {
  // strict: named parameters without the sigil prefix, as better-sqlite3 takes them.
  const db = new BunDatabase(path, { create: true, strict: true });
  // Bun hands a plain value array or object straight through; one argument or none.
  const args = (p?: SqlParams) => (p === undefined ? [] : [p]);
  return {
    driver: "bun:sqlite",
    exec: (sql) => void db.exec(sql),
    prepare<Row>(sql: string): Statement<Row> {
      const stmt = db.prepare(sql);
      return {
        run: (p) => {
          const r = stmt.run(...args(p));
          return { changes: r.changes, lastInsertRowid: r.lastInsertRowid };
        },
        get: (p) => (stmt.get(...args(p)) ?? undefined) as Row | undefined,
        all: (p) => stmt.all(...args(p)) as Row[],
      };
    },
    transaction: joiningTransaction(db),
    pragma: (name) => {
      const row = db.prepare(`PRAGMA ${name}`).get() as Record<string, unknown> | null;
      return row ? Object.values(row)[0] : undefined;
    },
    close: () => db.close(),
  };
}
