// The slice of bun:sqlite that sqlite-bun.ts uses; Bun's own types would clash with @types/node.
declare module "bun:sqlite" {
  interface BunStatement {
    run(...params: unknown[]): { changes: number; lastInsertRowid: number | bigint };
    get(...params: unknown[]): unknown;
    all(...params: unknown[]): unknown[];
  }
  interface BunTransaction<T> {
    (): T;
    immediate(): T;
  }
  export class Database {
    constructor(path: string, options?: { create?: boolean; strict?: boolean; readonly?: boolean });
    exec(sql: string): void;
    prepare(sql: string): BunStatement;
    transaction<T>(fn: () => T): BunTransaction<T>;
    readonly inTransaction: boolean;
    close(): void;
  }
}
