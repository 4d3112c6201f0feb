/**
 * The SQLite port. Two adapters implement it: better-sqlite3 under Node (tests,
 * development) and bun:sqlite in the compiled binary. Nothing else names either driver.
 */
export type SqlValue = string | number | bigint | null | Uint8Array;
export type SqlParams = Record<string, SqlValue> | SqlValue[];

export interface Statement<Row> {
  run(params?: SqlParams): { changes: number; lastInsertRowid: number | bigint };
  get(params?: SqlParams): Row | undefined;
  all(params?: SqlParams): Row[];
}

export interface Database {
  readonly driver: "better-sqlite3" | "bun:sqlite";
  exec(sql: string): void;
  prepare<Row = Record<string, unknown>>(sql: string): Statement<Row>;
  /** Runs fn in one IMMEDIATE transaction; nested calls join the outer one. */
  transaction<T>(fn: () => T): T;
  pragma(name: string): unknown;
  close(): void;
}

/**
 * Database.transaction over a driver connection: BEGIN IMMEDIATE … COMMIT with prepared
 * statements, and a call inside a transaction simply joins it. The drivers' own
 * transaction() builds a wrapper per call and makes a SAVEPOINT for every nested one
 * (each create and append inside the group commit), which cost more than the rows.
 * Nothing here catches a nested failure and goes on, so a savepoint bought nothing.
 */
export function joiningTransaction(db: { inTransaction: boolean; prepare(sql: string): { run(): unknown } }): <T>(fn: () => T) => T {
  const begin = db.prepare("BEGIN IMMEDIATE");
  const commit = db.prepare("COMMIT");
  const rollback = db.prepare("ROLLBACK");
  return <T>(fn: () => T): T => {
    if (db.inTransaction) return fn();
    begin.run();
    try {
      const result = fn();
      commit.run();
      return result;
    } catch (error) {
      // SQLite may have rolled back already (e.g. SQLITE_FULL): only roll back what is open.
      if (db.inTransaction) rollback.run();
      throw error;
    }
  };
}
