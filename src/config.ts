import { isIPv4 } from "node:net";
import { join, resolve } from "node:path";
import * as z from "zod/mini";
import en from "zod/v4/locales/en.js";
import { defaultDataDir } from "./data-dir.js";
import { parseDuration } from "./duration.js";
import { normalizeHost } from "./sandbox/host-name.js";

// Kept where they were for their importers; they live apart so the CLI can use them without zod.
export { defaultDataDir, parseDuration };

// Zod's mini build: the same checks and messages (the English locale's, as the full build
// sets) for ~1.5 MiB less of an idle daemon's memory than the full one, whose chained
// methods every schema carries.
z.config(en());

/** A whole number from a flag, a variable or the file, within [min, max]. */
const int = (min: number, max: number) => z.coerce.number().check(z.int(), z.gte(min), z.lte(max));
/** A number more than 0, at most max. */
const positive = (max: number) => z.coerce.number().check(z.positive(), z.lte(max));
const nonEmpty = () => z.string().check(z.minLength(1));
const matching = (pattern: RegExp, message: string) => z.string().check(z.regex(pattern, message));
type Payload = z.core.ParsePayload<unknown>;
/** A value of `input` read into something else by `read`, which says what is wrong with invalid(). */
const reading = <S extends z.ZodMiniType, T>(input: S, read: (v: z.output<S>, ctx: Payload) => T) => z.pipe(input, z.transform(read));
const readString = <T>(read: (v: string, ctx: Payload) => T) => reading(z.string(), read);
/** A number or a string with a unit ("90s", "4g"), read by `read`. */
const readAmount = <T>(read: (v: number | string, ctx: Payload) => T) => reading(z.union([z.number(), z.string()]), read);
/** The value is not one: `message` says why (after the setting's name); the schema's output is NEVER. */
function invalid(ctx: Payload, input: unknown, message: string): never {
  ctx.issues.push({ code: "custom", message, input });
  return z.NEVER;
}

const duration = readAmount((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === null) {
    return invalid(ctx, v, `${JSON.stringify(v)} is not a duration (examples: 90s, 30m, 2h, 5000ms)`);
  }
  return ms;
});

/** "4g", "512m", "1024k" or a number of bytes. */
export function parseBytes(v: number | string): number | null {
  if (typeof v === "number") return Number.isInteger(v) && v > 0 ? v : null;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(v.trim());
  if (!m) return null;
  const unit = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as "" | "k" | "m" | "g" | "t"];
  return Math.round(Number(m[1]) * unit);
}

/** "10.1.2.3" or "10.0.0.0/8" as a CIDR ("10.1.2.3/32"); null when it is neither. */
export function parseCidr(v: string): string | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/.exec(v);
  if (!m) return null;
  const octets = m.slice(1, 5).map(Number);
  const prefix = m[5] === undefined ? 32 : Number(m[5]);
  if (octets.some((o) => o > 255) || prefix > 32) return null;
  return `${octets.join(".")}/${prefix}`;
}

/** "https://Example.com:443" as the browser spells its Origin ("https://example.com"); null when it is not an origin. */
export function parseOrigin(v: string): string | null {
  if (!/^https?:\/\/[^/?#]+\/?$/i.test(v)) return null;
  try {
    const origin = new URL(v).origin;
    return origin === "null" ? null : origin;
  } catch {
    return null;
  }
}

/** A size ("512m", "4g" or bytes) of at least `min` bytes, `least` saying so in the message. */
const size = (min: number, least: string) =>
  readAmount((v, ctx) => {
    const n = parseBytes(v);
    if (n === null || n < min) {
      return invalid(ctx, v, `${JSON.stringify(v)} is not a size of at least ${least} (examples: 512m, 4g)`);
    }
    return n;
  });
const bytes = size(6 * 1024 * 1024, "6m");
/** A handoff's size limit: small ones are allowed (a daemon that only hands off small repositories). */
const handoffBytes = size(1024, "1k");

const listenAddress = readString((v, ctx) => {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    return invalid(ctx, v, `${JSON.stringify(v)} is not host:port (example: 127.0.0.1:7777)`);
  }
  return { host: m[1] ?? (m[2] || "127.0.0.1"), port };
});

export const ConfigSchema = z
  .strictObject({
    dataDir: nonEmpty(),
    listen: listenAddress,
    /** Unix socket for local clients; "" turns it off. */
    socket: z.string(),
    agentCommand: z.string(),
    defaultProvider: z.enum(["local", "docker", "modal"]),
    defaultTimeout: duration,
    maxConcurrentRuns: int(1, 1000),
    /** Runs in progress at once per team; 0: only the daemon's limit. */
    maxConcurrentRunsPerTeam: int(0, 1000),
    /** Queued runs at most, in all and per team; StartRun past it is RESOURCE_EXHAUSTED. */
    maxQueuedRuns: int(1, 1_000_000),
    maxQueuedRunsPerTeam: int(1, 1_000_000),
    /** Runs reconciled with their provider at once after a restart. */
    reconcileConcurrency: int(1, 1000),
    gitHost: z.url(),
    /** The GitHub App the daemon pushes runs' branches and opens pull requests as; "" for none. */
    githubAppId: matching(/^(\d+|Iv[0-9A-Za-z.]+)?$/, "is not a GitHub App id (a number) or client id (Iv…)"),
    githubAppKeyFile: z.string(),
    githubInstallationId: matching(/^\d*$/, "is not an installation id (a number)"),
    /** GitHub's REST API: https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise Server. */
    githubApiUrl: z.url().check(z.refine((u) => /^https?:\/\//.test(u), "must be an http(s) URL")),
    logLevel: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]),
    logFormat: z.enum(["auto", "json", "pretty", "journal"]),
    graceTime: duration,
    dockerSocket: nonEmpty(),
    dockerImage: nonEmpty(),
    dockerCpus: positive(1024),
    dockerMemory: bytes,
    dockerPids: int(16, 1_000_000),
    dockerRuntime: matching(/^[a-z0-9._-]+$/, "is not a runtime name (runc, runsc)"),
    /** Started docker sandboxes kept ready per pool key (image, repository, network, limits); 0: none. */
    warmPool: int(0, 64),
    /** Network holders kept ready per docker network runs used; 0: none. */
    warmNetworks: int(0, 64),
    /** The modal provider is registered when this is set: a registry image with paddock, git and the agents. */
    modalImage: z.string(),
    modalApp: matching(/^[A-Za-z0-9._-]{0,64}$/, "is not a Modal App name"),
    modalEnvironment: z.string(),
    modalTokenId: z.string(),
    modalTokenSecret: z.string(),
    /** Control plane URL; "" for the SDK's own (MODAL_SERVER_URL, the profile's, api.modal.com). */
    modalServerUrl: z.string(),
    /** PEM CA certificates trusted for the runners' tunnels besides the public roots (tests, private CAs). */
    modalTunnelCa: z.string(),
    modalCpus: positive(64),
    modalMemory: bytes,
    modalExitSnapshots: z.enum(["on", "off"]),
    /** A Linux paddock binary brought into --modal-image at the first start of each version; "" when the image has paddock. */
    modalInstallPaddock: z.string(),
    /** How long the daemon waits on one Modal control-plane call (the SDK's own retries included). */
    modalCallTimeout: duration,
    egressProxyPort: int(1, 65535),
    tlsCert: z.string(),
    tlsKey: z.string(),
    /** Uids for local agents when the daemon is root: "auto", "off" or FIRST-LAST. */
    localAgentUids: readString((v, ctx) => {
      if (v === "off") return null;
      if (v === "auto") return { first: 600_000, count: 100_000 };
      const m = /^(\d+)-(\d+)$/.exec(v);
      const first = Number(m?.[1]);
      const last = Number(m?.[2]);
      if (!m || first < 1000 || last < first || last > 4_000_000_000) {
        return invalid(ctx, v, `${JSON.stringify(v)} is not auto, off or a uid range FIRST-LAST above 999 (example: 600000-699999)`);
      }
      return { first, count: last - first + 1 };
    }),
    /** A run's log budget; lines past it are dropped with a note saying how many. */
    logMaxBytes: bytes,
    logMaxLines: int(10, 1e12),
    /** Largest handoff bundle taken out of a sandbox or uploaded (paddock handoff pull/push). */
    handoffMaxBytes: handoffBytes,
    /** Which runs keep their handoff state at cleanup (a run asked to hand off always does). */
    handoffKeep: z.enum(["all", "acp", "none"]),
    /** Where local agents' workspaces live when they have their own uids; "" for /var/lib/paddock-work/<instance>. */
    localWorkDir: z.string(),
    idleTimeout: duration,
    headersTimeout: duration,
    maxConnections: int(1, 1_000_000),
    maxConnectionsPerAddress: int(1, 1_000_000),
    keepaliveInterval: duration,
    egressHostMap: readString((v, ctx) => {
      const map: Record<string, string> = {};
      for (const pair of v.split(",").map((p) => p.trim()).filter(Boolean)) {
        const m = /^([^=]+)=(.+)$/.exec(pair);
        // Keyed by the proxy's own spelling of a name, so "Git.Internal." maps git.internal.
        const name = m ? normalizeHost(m[1]!.trim()) : null;
        if (!m || name === null || !isIPv4(m[2]!.trim())) {
          return invalid(ctx, v, `${JSON.stringify(pair)} is not name=IPv4 (example: git.internal=10.0.0.5)`);
        }
        map[name] = m[2]!.trim();
      }
      return map;
    }),
    /** Images runs and environments may ask for, besides dockerImage (always allowed). */
    sandboxImages: readString((v) => [...new Set(v.split(",").map((p) => p.trim()).filter(Boolean))]),
    /** PEM CA certificates every docker sandbox trusts (a corporate TLS proxy); "" for none. */
    sandboxCaFile: z.string(),
    /** PEM CA certificates the egress proxy verifies brokered destinations against; "" for the system's. */
    egressUpstreamCa: z.string(),
    /** Addresses unrestricted docker sandboxes may reach despite host isolation (IPv4 CIDRs). */
    /** Browser origins (scheme://host[:port]) allowed to call the API from their pages, or "*"; empty: none. */
    corsOrigin: readString((v, ctx) => {
      const origins: string[] = [];
      for (const item of v.split(",").map((p) => p.trim()).filter(Boolean)) {
        const origin = item === "*" ? item : parseOrigin(item);
        if (!origin) {
          return invalid(ctx, v, `${JSON.stringify(item)} is not an origin: scheme://host[:port] with no path, or * (example: https://ui.example.com,http://127.0.0.1:5173)`);
        }
        origins.push(origin);
      }
      return [...new Set(origins)];
    }),
    sandboxAllowCidrs: readString((v, ctx) => {
      const cidrs: string[] = [];
      for (const item of v.split(",").map((p) => p.trim()).filter(Boolean)) {
        const cidr = parseCidr(item);
        if (!cidr) {
          return invalid(ctx, v, `${JSON.stringify(item)} is not an IPv4 address or CIDR (example: 172.17.0.1,10.20.0.0/16)`);
        }
        cidrs.push(cidr);
      }
      return cidrs;
    }),
  })
  .check(
    z.superRefine((c, ctx) => {
      if (c.defaultTimeout <= 0 || c.defaultTimeout > 24 * 3_600_000) {
        ctx.addIssue({ code: "custom", path: ["defaultTimeout"], message: "must be more than 0 and at most 24h" });
      }
      if (!!c.tlsCert !== !!c.tlsKey) {
        ctx.addIssue({ code: "custom", path: [c.tlsCert ? "tlsKey" : "tlsCert"], message: "TLS needs both --tls-cert and --tls-key" });
      }
      for (const key of ["idleTimeout", "headersTimeout", "keepaliveInterval"] as const) {
        if (c[key] <= 0) ctx.addIssue({ code: "custom", path: [key], message: "must be more than 0" });
      }
      if (!!c.modalTokenId !== !!c.modalTokenSecret) {
        ctx.addIssue({ code: "custom", path: [c.modalTokenId ? "modalTokenSecret" : "modalTokenId"], message: "Modal credentials need both --modal-token-id and --modal-token-secret" });
      }
      if (c.maxConnectionsPerAddress > c.maxConnections) {
        ctx.addIssue({ code: "custom", path: ["maxConnectionsPerAddress"], message: `must be at most --max-connections (${c.maxConnections})` });
      }
      const app = [c.githubAppId, c.githubAppKeyFile, c.githubInstallationId];
      if (app.some(Boolean) && !app.every(Boolean)) {
        const missing = (["githubAppId", "githubAppKeyFile", "githubInstallationId"] as const).filter((k) => !c[k]);
        ctx.addIssue({ code: "custom", path: [missing[0]!], message: "is missing: a GitHub App needs --github-app-id, --github-app-key-file and --github-installation-id together" });
      }
      if (c.socket && c.socket.length > 100) {
        ctx.addIssue({ code: "custom", path: ["socket"], message: "unix socket paths are limited to about 100 characters" });
      }
    }),
  );

export type Config = Readonly<z.output<typeof ConfigSchema>>;
export type ConfigInput = Partial<Record<keyof z.input<typeof ConfigSchema>, unknown>>;

/** Setting name → environment variable. Flags use the kebab-case name (--data-dir). */
export const ENV_NAMES: Record<keyof ConfigInput, string> = {
  dataDir: "PADDOCK_DATA_DIR",
  listen: "PADDOCK_LISTEN",
  socket: "PADDOCK_SOCKET",
  agentCommand: "PADDOCK_AGENT_COMMAND",
  defaultProvider: "PADDOCK_DEFAULT_PROVIDER",
  defaultTimeout: "PADDOCK_DEFAULT_TIMEOUT",
  maxConcurrentRuns: "PADDOCK_MAX_CONCURRENT_RUNS",
  maxConcurrentRunsPerTeam: "PADDOCK_MAX_CONCURRENT_RUNS_PER_TEAM",
  maxQueuedRuns: "PADDOCK_MAX_QUEUED_RUNS",
  maxQueuedRunsPerTeam: "PADDOCK_MAX_QUEUED_RUNS_PER_TEAM",
  reconcileConcurrency: "PADDOCK_RECONCILE_CONCURRENCY",
  gitHost: "PADDOCK_GIT_HOST",
  githubAppId: "PADDOCK_GITHUB_APP_ID",
  githubAppKeyFile: "PADDOCK_GITHUB_APP_KEY_FILE",
  githubInstallationId: "PADDOCK_GITHUB_INSTALLATION_ID",
  githubApiUrl: "PADDOCK_GITHUB_API_URL",
  logLevel: "PADDOCK_LOG_LEVEL",
  logFormat: "PADDOCK_LOG_FORMAT",
  graceTime: "PADDOCK_GRACE_TIME",
  dockerSocket: "PADDOCK_DOCKER_SOCKET",
  dockerImage: "PADDOCK_DOCKER_IMAGE",
  dockerCpus: "PADDOCK_DOCKER_CPUS",
  dockerMemory: "PADDOCK_DOCKER_MEMORY",
  dockerPids: "PADDOCK_DOCKER_PIDS",
  dockerRuntime: "PADDOCK_DOCKER_RUNTIME",
  warmPool: "PADDOCK_WARM_POOL",
  warmNetworks: "PADDOCK_WARM_NETWORKS",
  egressProxyPort: "PADDOCK_EGRESS_PROXY_PORT",
  modalImage: "PADDOCK_MODAL_IMAGE",
  modalApp: "PADDOCK_MODAL_APP",
  modalEnvironment: "PADDOCK_MODAL_ENVIRONMENT",
  modalTokenId: "PADDOCK_MODAL_TOKEN_ID",
  modalTokenSecret: "PADDOCK_MODAL_TOKEN_SECRET",
  modalServerUrl: "PADDOCK_MODAL_SERVER_URL",
  modalTunnelCa: "PADDOCK_MODAL_TUNNEL_CA",
  modalCpus: "PADDOCK_MODAL_CPUS",
  modalMemory: "PADDOCK_MODAL_MEMORY",
  modalExitSnapshots: "PADDOCK_MODAL_EXIT_SNAPSHOTS",
  modalInstallPaddock: "PADDOCK_MODAL_INSTALL_PADDOCK",
  modalCallTimeout: "PADDOCK_MODAL_CALL_TIMEOUT",
  egressHostMap: "PADDOCK_EGRESS_HOST_MAP",
  tlsCert: "PADDOCK_TLS_CERT",
  tlsKey: "PADDOCK_TLS_KEY",
  localAgentUids: "PADDOCK_LOCAL_AGENT_UIDS",
  logMaxBytes: "PADDOCK_LOG_MAX_BYTES",
  logMaxLines: "PADDOCK_LOG_MAX_LINES",
  handoffMaxBytes: "PADDOCK_HANDOFF_MAX_BYTES",
  handoffKeep: "PADDOCK_HANDOFF_KEEP",
  localWorkDir: "PADDOCK_LOCAL_WORK_DIR",
  sandboxAllowCidrs: "PADDOCK_SANDBOX_ALLOW_CIDRS",
  sandboxImages: "PADDOCK_SANDBOX_IMAGES",
  sandboxCaFile: "PADDOCK_SANDBOX_CA_FILE",
  egressUpstreamCa: "PADDOCK_EGRESS_UPSTREAM_CA",
  idleTimeout: "PADDOCK_IDLE_TIMEOUT",
  headersTimeout: "PADDOCK_HEADERS_TIMEOUT",
  maxConnections: "PADDOCK_MAX_CONNECTIONS",
  maxConnectionsPerAddress: "PADDOCK_MAX_CONNECTIONS_PER_ADDRESS",
  keepaliveInterval: "PADDOCK_KEEPALIVE_INTERVAL",
  corsOrigin: "PADDOCK_CORS_ORIGIN",
};

export class ConfigError extends Error {
  override name = "ConfigError";
}

/**
 * Builds the one frozen Config: defaults < config file < environment < flags.
 * Errors name the setting, where it came from and what is wrong.
 */
export function loadConfig(env: Record<string, string | undefined>, flags: ConfigInput, file: ConfigInput = {}): Config {
  const fromEnv: ConfigInput = {};
  for (const [key, name] of Object.entries(ENV_NAMES) as [keyof ConfigInput, string][]) {
    if (env[name] !== undefined && env[name] !== "") fromEnv[key] = env[name];
  }
  const merged = { ...file, ...fromEnv, ...dropUndefined(flags) };
  const dataDir = resolve(String(merged.dataDir ?? defaultDataDir(env)));
  const input = {
    listen: "127.0.0.1:7777",
    socket: join(dataDir, "paddock.sock"),
    agentCommand: "",
    defaultProvider: "local",
    defaultTimeout: "60m",
    maxConcurrentRuns: 4,
    maxConcurrentRunsPerTeam: 0,
    maxQueuedRuns: 10_000,
    maxQueuedRunsPerTeam: 1_000,
    reconcileConcurrency: 8,
    gitHost: "https://github.com",
    githubAppId: "",
    githubAppKeyFile: "",
    githubInstallationId: "",
    githubApiUrl: "https://api.github.com",
    logLevel: "info",
    logFormat: "auto",
    graceTime: "10s",
    dockerSocket: "/var/run/docker.sock",
    dockerImage: "paddock-sandbox:latest",
    dockerCpus: 2,
    dockerMemory: "4g",
    dockerPids: 1024,
    dockerRuntime: "runc",
    warmPool: 0,
    warmNetworks: 1,
    egressProxyPort: 47830,
    modalImage: "",
    modalApp: "",
    modalEnvironment: "",
    modalTokenId: "",
    modalTokenSecret: "",
    modalServerUrl: "",
    modalTunnelCa: "",
    modalCpus: 2,
    modalMemory: "4g",
    modalExitSnapshots: "off",
    modalInstallPaddock: "",
    modalCallTimeout: "30s",
    egressHostMap: "",
    sandboxAllowCidrs: "",
    sandboxImages: "",
    sandboxCaFile: "",
    egressUpstreamCa: "",
    tlsCert: "",
    tlsKey: "",
    localAgentUids: "auto",
    logMaxBytes: "1g",
    logMaxLines: 10_000_000,
    handoffMaxBytes: "2g",
    handoffKeep: "all",
    localWorkDir: "",
    idleTimeout: "30s",
    headersTimeout: "10s",
    maxConnections: 1000,
    maxConnectionsPerAddress: 100,
    keepaliveInterval: "30s",
    corsOrigin: "",
    ...merged,
    dataDir,
  };
  const parsed = ConfigSchema.safeParse(input);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => {
      // Only the config file can name a setting that does not exist (flags and variables are known names).
      if (i.code === "unrecognized_keys") return i.keys.map((k) => `${k} (config file): is not a setting (see paddock serve --help)`).join("\n  ");
      const key = String(i.path[0] ?? "");
      const source = key in dropUndefined(flags) ? `--${kebab(key)}` : key in fromEnv ? ENV_NAMES[key as keyof ConfigInput] : key in file ? `${key} (config file)` : `--${kebab(key)}`;
      return `${source}: ${i.message}`;
    });
    throw new ConfigError(`invalid configuration:\n  ${lines.join("\n  ")}`);
  }
  return Object.freeze(parsed.data);
}

function dropUndefined(o: ConfigInput): ConfigInput {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as ConfigInput;
}

export function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** The docker provider's limits for every sandbox a run does not override. */
export function dockerLimits(config: Pick<Config, "dockerCpus" | "dockerMemory" | "dockerPids" | "dockerRuntime">): { cpus: number; memoryBytes: number; pids: number; runtime: string } {
  return { cpus: config.dockerCpus, memoryBytes: config.dockerMemory, pids: config.dockerPids, runtime: config.dockerRuntime };
}
