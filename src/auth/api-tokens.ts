import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { chmod, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { InvalidArgumentError } from "../errors.js";
import type { TokenRecord, TokensRepository } from "../store/tokens-repository.js";

export type { TokenRecord };

/**
 * `admin` is everything within its own team, token management included; `instance:admin`
 * adds the other teams' tokens and the power to grant instance:admin itself.
 */
export const SCOPES = ["tasks:read", "tasks:write", "runs:read", "runs:write", "environments:write", "admin", "instance:admin"] as const;
export type Scope = (typeof SCOPES)[number];
export const INSTANCE_ADMIN = "instance:admin" satisfies Scope;

/** Who is calling: a token's team and scopes, or the trusted local socket. */
export interface Principal {
  team: string;
  scopes: ReadonlySet<string>;
  tokenId: string | null;
  /** Who to say did something (a prompt, a permission answer): the token's name. */
  name: string;
}

export const LOCAL_ADMIN: Principal = { team: "default", scopes: new Set(["admin", INSTANCE_ADMIN]), tokenId: null, name: "local socket" };

export function allows(p: Principal, scope: Scope): boolean {
  return p.scopes.has(INSTANCE_ADMIN) || p.scopes.has("admin") || p.scopes.has(scope);
}

/** Token management of `team`: one's own team with admin, any team with instance:admin. */
export function mayManageTeam(p: Principal, team: string): boolean {
  return p.scopes.has(INSTANCE_ADMIN) || (p.team === team && allows(p, "admin"));
}

const TEAM = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export function validTeam(field: string, team: string): string {
  if (!TEAM.test(team)) throw new InvalidArgumentError(field, `${JSON.stringify(team)} is not a team name (letters, digits, "-", "_"; at most 64)`);
  return team;
}

const hash = (secret: string) => createHash("sha256").update(secret).digest("hex");

/**
 * Tokens look like "pdk_<id>_<secret>": the id finds the row, the secret is compared to
 * the stored hash in constant time. The secret itself is never stored.
 */
export function createApiTokens(tokens: TokensRepository) {
  function create(team: string, name: string, scopes: string[]): { record: TokenRecord; secret: string } {
    validTeam("team", team);
    if (name.length > 100) throw new InvalidArgumentError("name", "is longer than 100 characters");
    if (scopes.length === 0) throw new InvalidArgumentError("scopes", `give at least one of ${SCOPES.join(", ")}`);
    for (const s of scopes) {
      if (!(SCOPES as readonly string[]).includes(s)) throw new InvalidArgumentError("scopes", `unknown scope ${JSON.stringify(s)}; known: ${SCOPES.join(", ")}`);
    }
    const id = `tok_${randomBytes(8).toString("hex")}`;
    const secret = randomBytes(24).toString("base64url");
    const record = tokens.create({ id, team, name, scopes: [...new Set(scopes)], secretHash: hash(secret), createdAt: Date.now() });
    return { record, secret: `pdk_${id.slice(4)}_${secret}` };
  }

  /** The principal for a bearer token, or null when it is unknown, malformed or revoked. */
  function authenticate(bearer: string): Principal | null {
    const m = /^pdk_([0-9a-f]{16})_([A-Za-z0-9_-]{32})$/.exec(bearer);
    if (!m) return null;
    const record = tokens.get(`tok_${m[1]}`);
    if (!record || record.revokedAt !== null) return null;
    const a = Buffer.from(hash(m[2]!), "hex");
    const b = Buffer.from(record.secretHash, "hex");
    if (a.length !== b.length || !timingSafeEqual(a, b)) return null;
    const now = Date.now();
    // At most one write a minute per token: last use is for operators, not for accounting.
    if (!record.lastUsedAt || now - record.lastUsedAt > 60_000) tokens.markUsed(record.id, now);
    return { team: record.team, scopes: new Set(record.scopes), tokenId: record.id, name: record.name || record.id };
  }

  /**
   * On a daemon's first start: the instance's admin token (team "default", admin and
   * instance:admin), written to a 0600 file in the data dir. Returns the file's path, or
   * null when tokens exist already.
   */
  async function bootstrapAdmin(dataDir: string): Promise<string | null> {
    if (tokens.count() > 0) return null;
    const { secret } = create("default", "admin (made on first start)", ["admin", INSTANCE_ADMIN]);
    const path = join(dataDir, "admin-token");
    await writeFile(path, secret + "\n", { mode: 0o600 });
    await chmod(path, 0o600);
    return path;
  }

  return {
    create,
    authenticate,
    bootstrapAdmin,
    get: (id: string): TokenRecord | undefined => tokens.get(id),
    list: (team: string, before: number, limit: number): TokenRecord[] => tokens.list(team, before, limit),
    revoke: (id: string): void => tokens.revoke(id, Date.now()),
  };
}
export type ApiTokens = ReturnType<typeof createApiTokens>;
