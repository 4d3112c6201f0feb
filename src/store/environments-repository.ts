import { AlreadyExistsError } from "../errors.js";
import type { SecretBrokerRule } from "../sandbox/secret-broker.js";
import type { Database } from "./database.js";

export type { SecretBrokerRule };

export type NetworkAccessName = "trusted" | "full" | "custom";

/** An environment without its secrets' values. */
export interface EnvironmentSpec {
  networkAccess: NetworkAccessName;
  allowedDomains: string[];
  includeTrusted: boolean;
  envVars: Record<string, string>;
  setupScript: string;
  setupNetworkAccess: NetworkAccessName;
  repositories: string[];
  defaultProvider: string;
  timeoutMs: number | null;
  /** Sandbox image for its runs (on the operator's allowlist); "" for the daemon's. */
  image: string;
  /** The agent for runs that name none; null for the daemon's. */
  agent: { kind: "command" | "acp"; preset: string; command: string[] } | null;
  /** Defaults for ACP runs that give none; "" for paddock's. */
  runMode: "" | "background" | "interactive";
  permissionPolicy: "" | "auto_allow" | "ask" | "deny";
  /** Interactive runs awaiting input this long are completed; null: never. */
  idleTimeoutMs: number | null;
  /** Its runs in progress at once; 0 for no limit of its own. */
  maxConcurrentRuns: number;
  /** Git host tokens among its secrets and variables reach its sandboxes too (else the daemon alone has them). */
  grantGitTokens: boolean;
  /** Docker sandboxes kept waiting per pool key of its runs; 0 for the daemon's --warm-pool. */
  warmPool: number;
}

export interface SecretMeta {
  name: string;
  setupOnly: boolean;
  updatedAt: number;
  /** Null for a secret the sandbox gets as is. */
  broker: SecretBrokerRule | null;
}

export interface EnvironmentRecord extends EnvironmentSpec {
  seq: number;
  id: string;
  team: string;
  name: string;
  createdAt: number;
  updatedAt: number;
  secrets: SecretMeta[];
}

export interface SealedSecret {
  name: string;
  sealed: string;
  setupOnly: boolean;
  broker: SecretBrokerRule | null;
}

interface Row {
  seq: number;
  id: string;
  team: string;
  name: string;
  spec: string;
  created_at: number;
  updated_at: number;
}

/** Fields added since an environment was saved take their defaults. */
const withDefaults = (spec: Partial<EnvironmentSpec>): EnvironmentSpec =>
  ({ ...spec, image: spec.image ?? "", agent: spec.agent ?? null, runMode: spec.runMode ?? "", permissionPolicy: spec.permissionPolicy ?? "", idleTimeoutMs: spec.idleTimeoutMs ?? null, maxConcurrentRuns: spec.maxConcurrentRuns ?? 0, grantGitTokens: spec.grantGitTokens ?? false, warmPool: spec.warmPool ?? 0 }) as EnvironmentSpec;

export function createEnvironmentsRepository(db: Database) {
  const byId = db.prepare<Row>("SELECT * FROM environments WHERE id = ?");
  const secretsOf = db.prepare<{ name: string; setup_only: number; updated_at: number; sealed: string; broker: string }>(
    "SELECT name, setup_only, updated_at, sealed, broker FROM environment_secrets WHERE environment_id = ? ORDER BY name",
  );
  const brokerOf = (json: string): SecretBrokerRule | null => (json ? (JSON.parse(json) as SecretBrokerRule) : null);
  const insert = db.prepare("INSERT INTO environments (id, team, name, spec, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)");
  const update = db.prepare("UPDATE environments SET name = ?, spec = ?, updated_at = ? WHERE id = ?");
  const putSecret = db.prepare(`INSERT INTO environment_secrets (environment_id, name, sealed, setup_only, updated_at, broker) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (environment_id, name) DO UPDATE SET sealed = excluded.sealed, setup_only = excluded.setup_only, updated_at = excluded.updated_at, broker = excluded.broker`);
  const dropSecret = db.prepare("DELETE FROM environment_secrets WHERE environment_id = ? AND name = ?");
  const remove = db.prepare("DELETE FROM environments WHERE id = ?");
  const page = db.prepare<Row>("SELECT * FROM environments WHERE team = ? AND seq < ? ORDER BY seq DESC LIMIT ?");

  const toRecord = (r: Row): EnvironmentRecord => ({
    ...withDefaults(JSON.parse(r.spec) as Partial<EnvironmentSpec>),
    seq: r.seq,
    id: r.id,
    team: r.team,
    name: r.name,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    secrets: secretsOf.all([r.id]).map((s) => ({ name: s.name, setupOnly: s.setup_only === 1, updatedAt: s.updated_at, broker: brokerOf(s.broker) })),
  });

  return {
    get(id: string): EnvironmentRecord | undefined {
      const r = byId.get([id]);
      return r && toRecord(r);
    },
    list(team: string, before: number, limit: number): EnvironmentRecord[] {
      return page.all([team, before, limit]).map(toRecord);
    },
    /** Creates or replaces the environment and applies the secret changes, all or nothing. */
    save(
      e: { id: string; team: string; name: string; spec: EnvironmentSpec; now: number; create: boolean },
      setSecrets: SealedSecret[],
      removeSecrets: string[],
    ): EnvironmentRecord {
      return db.transaction(() => {
        try {
          if (e.create) insert.run([e.id, e.team, e.name, JSON.stringify(e.spec), e.now, e.now]);
          else update.run([e.name, JSON.stringify(e.spec), e.now, e.id]);
        } catch (error) {
          // The (team, name) constraint: a fact of the domain, not SQLite's words.
          if (/UNIQUE/.test((error as Error).message)) throw new AlreadyExistsError("environment", e.name);
          throw error;
        }
        for (const s of setSecrets) putSecret.run([e.id, s.name, s.sealed, s.setupOnly ? 1 : 0, e.now, s.broker ? JSON.stringify(s.broker) : ""]);
        for (const n of removeSecrets) dropSecret.run([e.id, n]);
        return toRecord(byId.get([e.id])!);
      });
    },
    /** Sealed values, for the daemon only (decrypted just before a sandbox starts). */
    sealedSecrets(id: string): SealedSecret[] {
      return secretsOf.all([id]).map((s) => ({ name: s.name, sealed: s.sealed, setupOnly: s.setup_only === 1, broker: brokerOf(s.broker) }));
    },
    /** Every team's environments that ask for a warm pool of their own (started with the daemon). */
    withWarmPool(): EnvironmentRecord[] {
      return db.prepare<Row>("SELECT * FROM environments WHERE json_extract(spec, '$.warmPool') > 0 ORDER BY seq").all().map(toRecord);
    },
    remove(id: string): void {
      db.transaction(() => {
        db.prepare("DELETE FROM environment_secrets WHERE environment_id = ?").run([id]);
        remove.run([id]);
      });
    },
  };
}
export type EnvironmentsRepository = ReturnType<typeof createEnvironmentsRepository>;
