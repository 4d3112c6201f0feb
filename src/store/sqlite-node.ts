import BetterSqlite3 from "better-sqlite3";
import { joiningTransaction, type Database, type SqlParams, type Statement } from "./database.js";

/** better-sqlite3 adapter: Node only (it does not load under Bun). */
export function openNodeSqlite(path: string): Database {
  const db = new BetterSqlite3(path);
  db.defaultSafeIntegers(false);
  const args = (p?: SqlParams) => (p === undefined ? [] : [p]);
  return {
    driver: "better-sqlite3",
    exec: (sql) => void db.exec(sql),
    prepare<Row>(sql: string): Statement<Row> {
      const stmt = db.prepare(sql);
      return {
        run: (p) => {
          const r = stmt.run(...args(p));
          return { changes: r.changes, lastInsertRowid: r.lastInsertRowid };
        },
        get: (p) => stmt.get(...args(p)) as Row | undefined,
        all: (p) => stmt.all(...args(p)) as Row[],
      };
    },
    transaction: joiningTransaction(db),
    pragma: (name) => db.pragma(name, { simple: true }),
    close: () => db.close(),
  };
}
