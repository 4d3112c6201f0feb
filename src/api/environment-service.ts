import { create } from "@bufbuild/protobuf";
import { AgentKind, PermissionPolicy, RunMode } from "../gen/paddock/v1/task_run_pb.js";
import { checkAgent } from "../runs/agent-spec.js";
import { brokeredValueProblem, parseBroker } from "../runs/brokered-secrets.js";
import { policyName } from "./task-run-service.js";
import { timestampFromMs, durationFromMs } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { InvalidArgumentError } from "../errors.js";
import {
  EnvironmentSchema,
  EnvironmentService,
  NetworkAccess,
  SecretInfoSchema,
  type Environment,
  type SecretInput,
} from "../gen/paddock/v1/environment_pb.js";
import { newId } from "../runs/run-manager.js";
import { parseAllowedDomain } from "../sandbox/egress-policy.js";
import type { EnvironmentRecord, Environments, EnvironmentSpec, NetworkAccessName } from "../runs/environments.js";
import { principalOf } from "./auth.js";
import { decodePageToken, pageSize, paginate } from "./page-token.js";
import { runTimeoutMs } from "./run-timeout.js";

const NAME = /^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/;
const VAR = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

function accessName(field: string, a: NetworkAccess, fallback: NetworkAccessName): NetworkAccessName {
  switch (a) {
    case NetworkAccess.UNSPECIFIED:
      return fallback;
    case NetworkAccess.TRUSTED:
      return "trusted";
    case NetworkAccess.FULL:
      return "full";
    case NetworkAccess.CUSTOM:
      return "custom";
    default:
      throw new InvalidArgumentError(field, `unknown value ${String(a)}`);
  }
}

function accessProto(a: NetworkAccessName): NetworkAccess {
  switch (a) {
    case "trusted":
      return NetworkAccess.TRUSTED;
    case "full":
      return NetworkAccess.FULL;
    case "custom":
      return NetworkAccess.CUSTOM;
    default: {
      const never: never = a;
      throw new Error(`unexpected network access ${String(never)}`);
    }
  }
}

/** Never a secret's value: names, scope and times only. */
export function environmentToProto(e: EnvironmentRecord): Environment {
  return create(EnvironmentSchema, {
    id: e.id,
    team: e.team,
    name: e.name,
    networkAccess: accessProto(e.networkAccess),
    allowedDomains: e.allowedDomains,
    includeTrusted: e.includeTrusted,
    envVars: e.envVars,
    secrets: e.secrets.map((s) =>
      create(SecretInfoSchema, {
        name: s.name,
        setupOnly: s.setupOnly,
        updateTime: timestampFromMs(s.updatedAt),
        // The rule is configuration, not the secret: shown so that people can check where it goes.
        broker: s.broker ? { host: s.broker.port === 443 ? s.broker.host : `${s.broker.host}:${s.broker.port}`, pathPrefix: s.broker.pathPrefix, header: s.broker.basicUsername ? "" : s.broker.header, template: s.broker.basicUsername ? "" : s.broker.template, basicUsername: s.broker.basicUsername } : undefined,
      }),
    ),
    setupScript: e.setupScript,
    setupNetworkAccess: accessProto(e.setupNetworkAccess),
    repositories: e.repositories,
    defaultProvider: e.defaultProvider,
    timeout: e.timeoutMs === null ? undefined : durationFromMs(e.timeoutMs),
    image: e.image,
    agent: e.agent ? { kind: e.agent.kind === "acp" ? AgentKind.ACP : AgentKind.COMMAND, preset: e.agent.preset, command: e.agent.command } : undefined,
    mode: e.runMode === "interactive" ? RunMode.INTERACTIVE : e.runMode === "background" ? RunMode.BACKGROUND : RunMode.UNSPECIFIED,
    permissionPolicy: { "": PermissionPolicy.UNSPECIFIED, auto_allow: PermissionPolicy.AUTO_ALLOW, ask: PermissionPolicy.ASK, deny: PermissionPolicy.DENY }[e.permissionPolicy],
    idleTimeout: e.idleTimeoutMs === null ? undefined : durationFromMs(e.idleTimeoutMs),
    maxConcurrentRuns: e.maxConcurrentRuns,
    grantGitTokens: e.grantGitTokens,
    warmPool: e.warmPool,
    createTime: timestampFromMs(e.createdAt),
    updateTime: timestampFromMs(e.updatedAt),
  });
}

function specFrom(env: Environment, providers: ReadonlySet<string>, images: readonly string[]): { name: string; spec: EnvironmentSpec } {
  const name = env.name.trim();
  if (!NAME.test(name)) throw new InvalidArgumentError("environment.name", `${JSON.stringify(env.name)}: letters, digits, space, ".", "_", "-"; at most 64`);
  const networkAccess = accessName("environment.network_access", env.networkAccess, "trusted");
  const allowedDomains = env.allowedDomains.map((d) => d.trim().toLowerCase());
  allowedDomains.forEach((d, i) => {
    const parsed = parseAllowedDomain(d);
    if (typeof parsed === "string") throw new InvalidArgumentError(`environment.allowed_domains[${i}]`, parsed);
  });
  if (networkAccess === "custom" && allowedDomains.length === 0 && !env.includeTrusted) {
    throw new InvalidArgumentError("environment.allowed_domains", "custom network access needs at least one domain, or include_trusted");
  }
  for (const [k, v] of Object.entries(env.envVars)) {
    if (!VAR.test(k)) throw new InvalidArgumentError("environment.env_vars", `${JSON.stringify(k)} is not an environment variable name`);
    if (k.startsWith("PADDOCK_")) throw new InvalidArgumentError("environment.env_vars", `${k}: the PADDOCK_ prefix is paddock's own`);
    if (v.length > 32 * 1024) throw new InvalidArgumentError("environment.env_vars", `${k}: value longer than 32 KiB`);
  }
  if (env.setupScript.length > 64 * 1024) throw new InvalidArgumentError("environment.setup_script", "is longer than 64 KiB");
  if (env.defaultProvider && !providers.has(env.defaultProvider)) {
    throw new InvalidArgumentError("environment.default_provider", `unknown provider ${JSON.stringify(env.defaultProvider)}; this daemon has: ${[...providers].join(", ")}`);
  }
  const timeoutMs = runTimeoutMs("environment.timeout", env.timeout);
  const idleTimeoutMs = runTimeoutMs("environment.idle_timeout", env.idleTimeout);
  const a = env.agent;
  const named = a && (a.kind !== AgentKind.UNSPECIFIED || a.preset || a.command.length > 0);
  const agent = named
    ? checkAgent("environment.agent", { kind: a.kind === AgentKind.ACP ? "acp" : a.kind === AgentKind.COMMAND ? "command" : "", preset: a.preset, command: [...a.command] })
    : null;
  if (agent && !agent.kind) throw new InvalidArgumentError("environment.agent", "give a preset, a command, or both a kind and a command");
  const runMode = env.mode === RunMode.INTERACTIVE ? "interactive" : env.mode === RunMode.BACKGROUND ? "background" : "";
  if (runMode === "interactive" && agent?.kind !== "acp") throw new InvalidArgumentError("environment.mode", "interactive runs need an ACP agent (environment.agent)");
  const image = env.image.trim();
  if (image && !images.includes(image)) {
    throw new InvalidArgumentError("environment.image", `image ${JSON.stringify(image)} is not allowed on this daemon (--sandbox-images: ${images.join(", ")})`);
  }
  return {
    name,
    spec: {
      networkAccess,
      allowedDomains,
      includeTrusted: env.includeTrusted,
      envVars: { ...env.envVars },
      setupScript: env.setupScript,
      setupNetworkAccess: accessName("environment.setup_network_access", env.setupNetworkAccess, "trusted"),
      repositories: env.repositories.map((r) => r.trim()).filter(Boolean),
      defaultProvider: env.defaultProvider,
      timeoutMs,
      image,
      agent: agent ? { kind: agent.kind as "command" | "acp", preset: agent.preset, command: agent.command } : null,
      runMode,
      permissionPolicy: policyName(env.permissionPolicy),
      idleTimeoutMs,
      maxConcurrentRuns: nonNegative("environment.max_concurrent_runs", env.maxConcurrentRuns),
      grantGitTokens: env.grantGitTokens,
      warmPool: warmPoolSize(env.warmPool, providers),
    },
  };
}

/** Most sandboxes an environment may keep waiting per pool key: each holds a started container. */
export const MAX_ENVIRONMENT_WARM_POOL = 8;

function warmPoolSize(n: number, providers: ReadonlySet<string>): number {
  if (n > MAX_ENVIRONMENT_WARM_POOL) throw new InvalidArgumentError("environment.warm_pool", `at most ${MAX_ENVIRONMENT_WARM_POOL} sandboxes per repository, not ${n} (0: the daemon's --warm-pool)`);
  const pooled = ["docker", "local", "modal"];
  if (n > 0 && !pooled.some((p) => providers.has(p))) throw new InvalidArgumentError("environment.warm_pool", `a warm pool is kept by the docker, local and modal providers, which this daemon does not have (it has: ${[...providers].join(", ")})`);
  return n;
}

export interface EnvironmentServiceDeps {
  environments: Environments;
  providers: ReadonlySet<string>;
  sandboxImages: readonly string[];
}

export function createEnvironmentService(deps: EnvironmentServiceDeps): ServiceImpl<typeof EnvironmentService> {
  const owned = (id: string, ctx: HandlerContext) => {
    if (!id) throw new InvalidArgumentError("environment_id", "is required");
    return deps.environments.owned(principalOf(ctx).team, id);
  };
  const checkSecrets = (secrets: SecretInput[], envVars: Record<string, string>, field: string) =>
    secrets.map((s, i) => {
      if (!VAR.test(s.name)) throw new InvalidArgumentError(`${field}[${i}].name`, `${JSON.stringify(s.name)} is not an environment variable name`);
      if (s.name in envVars) throw new InvalidArgumentError(`${field}[${i}].name`, `${s.name} is also a plain env var`);
      // Never echo a value back, even in an error.
      if (s.value.length < 4 || s.value.length > 32 * 1024) throw new InvalidArgumentError(`${field}[${i}].value`, "must be 4 bytes to 32 KiB (shorter values cannot be told apart in logs to redact them)");
      const broker = s.broker ? parseBroker(`${field}[${i}].broker`, s.broker) : null;
      const problem = broker && brokeredValueProblem(s.value);
      if (problem) throw new InvalidArgumentError(`${field}[${i}].value`, problem);
      return { name: s.name, value: s.value, setupOnly: s.setupOnly, broker };
    });
  const unique = (names: string[], field: string) => {
    const seen = new Set<string>();
    for (const n of names) {
      if (seen.has(n)) throw new InvalidArgumentError(field, `${n} is given twice`);
      seen.add(n);
    }
  };

  return {
    createEnvironment(req, ctx) {
      if (!req.environment) throw new InvalidArgumentError("environment", "is required");
      const { name, spec } = specFrom(req.environment, deps.providers, deps.sandboxImages);
      unique(req.secrets.map((s) => s.name), "secrets");
      const id = newId("env");
      const secrets = checkSecrets(req.secrets, spec.envVars, "secrets");
      return { environment: environmentToProto(deps.environments.save({ id, team: principalOf(ctx).team, name, spec, create: true }, secrets, [])) };
    },
    getEnvironment(req, ctx) {
      return { environment: environmentToProto(owned(req.environmentId, ctx)) };
    },
    listEnvironments(req, ctx) {
      const size = pageSize(req.pageSize);
      const page = paginate(deps.environments.list(principalOf(ctx).team, decodePageToken(req.pageToken), size + 1), size, (e) => e.seq);
      return { environments: page.items.map(environmentToProto), nextPageToken: page.nextPageToken };
    },
    updateEnvironment(req, ctx) {
      if (!req.environment) throw new InvalidArgumentError("environment", "is required");
      const current = owned(req.environment.id, ctx);
      const { name, spec } = specFrom(req.environment, deps.providers, deps.sandboxImages);
      unique(req.setSecrets.map((s) => s.name), "set_secrets");
      const secrets = checkSecrets(req.setSecrets, spec.envVars, "set_secrets");
      for (const n of req.removeSecrets) {
        if (!current.secrets.some((s) => s.name === n)) throw new InvalidArgumentError("remove_secrets", `the environment has no secret ${n}`);
      }
      const kept = current.secrets.filter((s) => !req.removeSecrets.includes(s.name)).map((s) => s.name);
      for (const k of Object.keys(spec.envVars)) {
        if (kept.includes(k) && !req.setSecrets.some((s) => s.name === k)) throw new InvalidArgumentError("environment.env_vars", `${k} is also a secret`);
      }
      return { environment: environmentToProto(deps.environments.save({ id: current.id, team: current.team, name, spec, create: false }, secrets, req.removeSecrets)) };
    },
    deleteEnvironment(req, ctx) {
      deps.environments.remove(owned(req.environmentId, ctx).id);
      return {};
    },
  };
}

function nonNegative(field: string, n: number): number {
  if (n < 0) throw new InvalidArgumentError(field, `must be 0 (no limit) or more, not ${n}`);
  return n;
}
