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
