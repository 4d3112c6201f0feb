import { createHash } from "node:crypto";
import type { SecretBox } from "../auth/secret-box.js";
import type { NetworkPolicy } from "../sandbox/egress-policy.js";
import { AlreadyExistsError, InvalidArgumentError, NotFoundError } from "../errors.js";
import type { EnvironmentRecord, EnvironmentSpec, EnvironmentsRepository, SecretBrokerRule } from "../store/environments-repository.js";
import { secretAad } from "./brokered-secrets.js";

/** Replaces every secret (and its encodings) in a log line: no secret reaches stored or streamed logs. */
export { redactor } from "../redaction.js";

export interface SecretValue {
  name: string;
  value: string;
  setupOnly: boolean;
  /** Set for a brokered secret: the egress proxy adds it, the sandbox holds a placeholder. */
  broker: SecretBrokerRule | null;
}

export type { EnvironmentRecord, EnvironmentSpec, NetworkAccessName } from "../store/environments-repository.js";

/** Environments as the domain has them: settings, secrets sealed at rest and opened on demand, and one team-ownership check. */
export interface Environments {
  get(id: string): EnvironmentRecord | undefined;
  secretValues(id: string): SecretValue[];
  /** The team's environment `id`; another team's does not exist for it. */
  owned(team: string, id: string): EnvironmentRecord;
  list(team: string, before: number, limit: number): EnvironmentRecord[];
  /**
   * Creates or replaces an environment and applies secret changes, all or nothing; values
   * are sealed here. A name the team uses already is an error on `environment.name`.
   */
  save(
    e: { id: string; team: string; name: string; spec: EnvironmentSpec; create: boolean },
    setSecrets: SecretValue[],
    removeSecrets: string[],
  ): EnvironmentRecord;
  remove(id: string): void;
}

/** The network policy of each stage of a run in this environment; null without one. */
export function networkOf(env: EnvironmentRecord | undefined): { setup: NetworkPolicy; agent: NetworkPolicy } | null {
  if (!env) return null;
  const base = { allowedDomains: env.allowedDomains, includeTrusted: env.includeTrusted };
  const agent: NetworkPolicy = { access: env.networkAccess, ...base };
  // Without a setup script there is no setup stage, and its policy must not restrict the sandbox.
  return { setup: env.setupScript ? { access: env.setupNetworkAccess, ...base } : agent, agent };
}

/**
 * What the setup script depends on, for snapshot keys: the script, the variables and each
 * secret's name and version (never its value). "" without an environment or a setup script.
 */
export function setupHash(env: EnvironmentRecord | undefined): string {
  if (!env?.setupScript) return "";
  const secrets = env.secrets.map((s) => [s.name, s.setupOnly, s.updatedAt, s.broker]);
  return createHash("sha256").update(JSON.stringify([env.setupScript, env.envVars, secrets])).digest("hex");
}

/**
 * `saved`: told of each environment created or updated (the daemon starts the warm pool it
 * asks for); `removed`: of each one removed (its warm pool goes).
 */
export function createEnvironments(repo: EnvironmentsRepository, box: SecretBox, saved?: (env: EnvironmentRecord) => void, removed?: (id: string) => void): Environments {
  return {
    get: (id) => repo.get(id),
    secretValues: (id) =>
      repo.sealedSecrets(id).map((s) => ({ name: s.name, value: box.open(s.sealed, secretAad(id, s.name, s.broker)), setupOnly: s.setupOnly, broker: s.broker })),
    owned(team, id) {
      const e = repo.get(id);
      if (!e || e.team !== team) throw new NotFoundError("environment", id);
      return e;
    },
    list: (team, before, limit) => repo.list(team, before, limit),
    save(e, setSecrets, removeSecrets) {
      const sealed = setSecrets.map((s) => ({ name: s.name, sealed: box.seal(s.value, secretAad(e.id, s.name, s.broker)), setupOnly: s.setupOnly, broker: s.broker }));
      try {
        const record = repo.save({ ...e, now: Date.now() }, sealed, removeSecrets);
        saved?.(record);
        return record;
      } catch (error) {
        if (error instanceof AlreadyExistsError) throw new InvalidArgumentError("environment.name", `the team already has an environment named ${JSON.stringify(e.name)}`);
        throw error;
      }
    },
    remove: (id) => {
      repo.remove(id);
      removed?.(id);
    },
  };
}

/**
 * The environment a task or run may use: the caller's team's, and one that allows the
 * repository. `field` names the request field in the error.
 */
export function usableEnvironment(envs: Pick<Environments, "get">, id: string, team: string, repository: string, field: string): EnvironmentRecord {
  const env = envs.get(id);
  if (!env || env.team !== team) throw new InvalidArgumentError(field, `no environment ${JSON.stringify(id)} in your team`);
  if (env.repositories.length > 0 && !env.repositories.includes(repository)) {
    throw new InvalidArgumentError(field, `environment ${env.name} does not allow the repository ${repository} (it allows: ${env.repositories.join(", ")})`);
  }
  return env;
}
