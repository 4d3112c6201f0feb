import type { Database } from "./database.js";

export interface TokenRecord {
  seq: number;
  id: string;
  team: string;
  name: string;
  scopes: string[];
  secretHash: string;
  createdAt: number;
  lastUsedAt: number | null;
  revokedAt: number | null;
}

interface Row {
  seq: number;
  id: string;
  team: string;
  name: string;
  scopes: string;
  secret_hash: string;
  created_at: number;
  last_used_at: number | null;
  revoked_at: number | null;
}

const toRecord = (r: Row): TokenRecord => ({
  seq: r.seq,
  id: r.id,
  team: r.team,
  name: r.name,
  scopes: JSON.parse(r.scopes) as string[],
  secretHash: r.secret_hash,
  createdAt: r.created_at,
  lastUsedAt: r.last_used_at,
  revokedAt: r.revoked_at,
});

export function createTokensRepository(db: Database) {
  const insert = db.prepare(`INSERT INTO api_tokens (id, team, name, scopes, secret_hash, created_at)
    VALUES (:id, :team, :name, :scopes, :secretHash, :createdAt)`);
  const byId = db.prepare<Row>("SELECT * FROM api_tokens WHERE id = ?");
  const count = db.prepare<{ n: number }>("SELECT count(*) AS n FROM api_tokens");
  const used = db.prepare("UPDATE api_tokens SET last_used_at = ? WHERE id = ?");
  const revoke = db.prepare("UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL");
  return {
    create(t: Omit<TokenRecord, "seq" | "lastUsedAt" | "revokedAt">): TokenRecord {
      insert.run({ id: t.id, team: t.team, name: t.name, scopes: JSON.stringify(t.scopes), secretHash: t.secretHash, createdAt: t.createdAt });
      return toRecord(byId.get([t.id])!);
    },
    get(id: string): TokenRecord | undefined {
      const r = byId.get([id]);
      return r && toRecord(r);
    },
    count(): number {
      return count.get()!.n;
    },
    markUsed(id: string, at: number): void {
      used.run([at, id]);
    },
    revoke(id: string, at: number): void {
      revoke.run([at, id]);
    },
    /** Newest first, seq below `before`; a team of "" lists every team. */
    list(team: string, before: number, limit: number): TokenRecord[] {
      const rows = team
        ? db.prepare<Row>("SELECT * FROM api_tokens WHERE team = ? AND seq < ? ORDER BY seq DESC LIMIT ?").all([team, before, limit])
        : db.prepare<Row>("SELECT * FROM api_tokens WHERE seq < ? ORDER BY seq DESC LIMIT ?").all([before, limit]);
      return rows.map(toRecord);
    },
  };
}
export type TokensRepository = ReturnType<typeof createTokensRepository>;
