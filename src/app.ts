import { setMaxListeners } from "node:events";
import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import { createApiTokens } from "./auth/api-tokens.js";
import { loadOrCreateKey, loadOrCreateSecretBox } from "./auth/secret-box.js";
import { brokersOfStage, runSecrets } from "./runs/brokered-secrets.js";
import { createEnvironments, networkOf } from "./runs/environments.js";
import { BrokerCa } from "./sandbox/broker-ca.js";
import { brokerMatchesHost } from "./sandbox/secret-broker.js";
import { createTasks } from "./runs/tasks.js";
import type { ApiHandlers } from "./api/api-handlers.js";
import { createEgressAuditRepository } from "./store/egress-audit-repository.js";
import { createEnvironmentsRepository } from "./store/environments-repository.js";
import { createTokensRepository } from "./store/tokens-repository.js";
import { listen, type Listener, type RequestHandler } from "./api/listener.js";
import { createMetrics } from "./api/metrics.js";
import { withPlainEndpoints } from "./api/plain-endpoints.js";
import { loadWebAssets } from "./api/web-assets.js";
import { withWebUi } from "./api/web-ui.js";
import { createReadiness, type Readiness } from "./api/readiness.js";
import { issueSandboxToken, loadOrCreateSandboxKeys } from "./auth/sandbox-token.js";
import { ConfigError, dockerLimits, type Config } from "./config.js";
import { Handoffs } from "./runs/handoffs.js";
import { RunManager } from "./runs/run-manager.js";
import { gitHubAppAuth } from "./github/github-auth.js";
import { gitHubCloneCredentials, gitHubWebUrl, type GitHubSettings } from "./runs/pull-requests.js";
import { DockerProvider } from "./sandbox/docker/docker-provider.js";
import { lazyDocker } from "./sandbox/docker/lazy-docker.js";
import { warmEnvironment, type PoolWarmer } from "./runs/pool-warmer.js";
import { resolveRepository } from "./runs/repository-ref.js";
import type { EnvironmentRecord } from "./store/environments-repository.js";
import { LocalProvider } from "./sandbox/local/local-provider.js";
import { trustRunnerCa } from "./sandbox/runner-client.js";
import type { SandboxProvider } from "./sandbox/provider.js";
import { lockDataDir } from "./store/data-dir-lock.js";
import { instanceId, probeWritable } from "./store/meta.js";
import { openDatabase } from "./store/open-database.js";
import { restrictDataDir } from "./store/restrict-data-dir.js";
import { createRunsRepository } from "./store/runs-repository.js";
import { createSnapshotsRepository } from "./store/snapshots-repository.js";
import { createTasksRepository } from "./store/tasks-repository.js";

export interface AppOptions {
  config: Config;
  logger: Logger;
  /** argv that starts `paddock agent`; see runnerCommand(). */
  runnerCommand: string[];
  /** Environment runners and agents inherit (PATH, HOME…). */
  baseEnv: Record<string, string | undefined>;
  /** How long the runner's events long-poll waits; tests shorten it. */
  pollWaitMs?: number;
}

export interface App {
  runs: RunManager;
  /** The sandbox providers by name (tests and benches look at the docker provider's warm pool). */
  providers: ReadonlyMap<string, SandboxProvider>;
  handlers: { tcp: RequestHandler; unix: RequestHandler };
  /** Restores live runs, then listens on the configured TCP address and unix socket. */
  start(listenOverride?: { host: string; port: number; socketPath?: string }): Promise<Listener>;
  /** Stops listening and stops the actors; runs stay stored and resume at the next start. */
  stop(): Promise<void>;
  /** What /readyz says (the store takes writes, providers are initialised); the watchdog asks it too. */
  readiness(): Readiness;
}

/** The composition root: builds the concrete parts; listening is start()'s job. */
export async function createApp(opts: AppOptions): Promise<App> {
  const { config, logger } = opts;
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  // First: a second daemon must stop here, before it touches the socket or the database.
  const dataDirLock = await lockDataDir(config.dataDir);
  await restrictDataDir(config.dataDir);
  const db = await openDatabase(join(config.dataDir, "paddock.db"));
  const keys = await loadOrCreateSandboxKeys(config.dataDir);
  const tasks = createTasksRepository(db);
  const runsRepo = createRunsRepository(db);
  const secretBox = await loadOrCreateSecretBox(config.dataDir);
  const environmentsRepo = createEnvironmentsRepository(db);
  // An environment that asks for a warm pool gets its members at once (providers are made below).
  // Local's and Modal's pools only where that provider is the default: an environment has no
  // provider of its own, and a Modal member is a billed sandbox nobody may have meant to keep.
  const warmers = () =>
    (config.defaultProvider === "docker" ? ["docker"] : ["docker", config.defaultProvider]).map((name) => providers.get(name) as PoolWarmer | undefined);
  const warm = (env: EnvironmentRecord) => {
    for (const warmer of warmers()) warmEnvironment(env, warmer, (r) => resolveRepository(r, config.gitHost), (msg) => logger.warn(msg));
  };
  const environments = createEnvironments(environmentsRepo, secretBox, warm, (id) => {
    for (const warmer of warmers()) warmer?.resizeEnvironmentPool(id, null);
  });
  const egressAudit = createEgressAuditRepository(db);
  const instance = instanceId(db);
  const isRoot = process.getuid?.() === 0;
  const sandboxImages = [...new Set([config.dockerImage, ...config.sandboxImages])];
  // Read at scrape time; `runs` exists by the time anything scrapes.
  const metrics = createMetrics({ runCounts: () => runsRepo.countByStatus(), queueDepth: () => runs.queueDepth });
  if (config.sandboxCaFile) await checkCaFile(config.sandboxCaFile, "--sandbox-ca-file");
  if (config.egressUpstreamCa) await checkCaFile(config.egressUpstreamCa, "--egress-upstream-ca");
  const github = await gitHubSettings(config);
  const gitCredentials = gitHubCloneCredentials(github);
  // The egress proxy's own CA, for brokered destinations only; its key never leaves the data dir.
  const brokerCa = await BrokerCa.loadOrCreate(config.dataDir, instance);
  const sandboxTrust = await sandboxTrustFile(config.dataDir, config.sandboxCaFile ? resolve(config.sandboxCaFile) : "", brokerCa.certPem);
  const providers = new Map<string, SandboxProvider>([
    [
      "local",
      new LocalProvider({
        root: config.dataDir,
        gitCredentials,
        // Only root can give agents uids of their own; otherwise runs say they are not isolated.
        agentUids: isRoot ? config.localAgentUids : null,
        workRoot: config.localWorkDir || join("/var/lib/paddock-work", instance),
        runnerCommand: opts.runnerCommand,
        baseEnv: opts.baseEnv,
        graceMs: config.graceTime,
        runnerStartTimeoutMs: 30_000,
        warn: (msg) => logger.warn({ provider: "local" }, msg),
      }),
    ],
  ]);
  if (existsSync(config.dockerSocket)) {
    providers.set(
      "docker",
      new DockerProvider({
        // dockerode loads at the first call an idle daemon does not make (see lazy-docker.ts).
        docker: lazyDocker(config.dockerSocket),
        image: config.dockerImage,
        instanceId: instance,
        tokenFor: (runId) => issueSandboxToken(keys, runId, 3600),
        root: config.dataDir,
        gitCredentials,
        limits: dockerLimits(config),
        graceMs: config.graceTime,
        runnerStartTimeoutMs: 60_000,
        snapshots: createSnapshotsRepository(db),
        snapshotMaxAgeMs: 7 * 24 * 3600_000,
        snapshotMaxBytes: 20 * 1024 ** 3,
        egress: {
          port: config.egressProxyPort,
          key: await loadOrCreateKey(join(config.dataDir, "egress.key")),
          hostMap: config.egressHostMap,
          // Asked per request: a run's policy is its environment's now, and nothing once cleaned.
          policyFor: (runId, stage) => {
            const run = runsRepo.get(runId);
            if (!run || run.phase === "cleaned" || !run.environmentId) return null;
            return networkOf(environments.get(run.environmentId))?.[stage] ?? null;
          },
          audit: (runId, host, port, verdict) => {
            metrics.egressDecision(verdict);
            egressAudit.record(runId, host, port, verdict);
          },
          log: (msg, fields) => logger.info(fields ?? {}, msg),
          ca: brokerCa,
          upstreamCa: config.egressUpstreamCa ? await readFile(config.egressUpstreamCa, "utf8") : undefined,
          // Asked per intercepted connection, like the policy: nothing once the run is cleaned.
          brokersFor: (runId, stage, { host, port }) => {
            const run = runsRepo.get(runId);
            if (!run || run.phase === "cleaned" || !run.environmentId) return [];
            const env = environments.get(run.environmentId);
            if (!env) return [];
            // Rules first, from what is stored in the clear; values are opened only for a destination that has one.
            const rules = runSecrets(env.secrets.map((s) => ({ ...s, value: "" })), { agentCommand: run.agentCommand, envVars: env.envVars, providerBrokers: true });
            const wanted = brokersOfStage(rules.secrets, stage).filter((b) => brokerMatchesHost(b.rule, host, port));
            if (wanted.length === 0) return [];
            const values = new Map(environments.secretValues(env.id).map((s) => [s.name, s.value]));
            return wanted.flatMap((b) => (values.has(b.name) ? [{ ...b, value: values.get(b.name)! }] : []));
          },
          auditBrokered: (runId, host, port, secretName) => egressAudit.recordBrokered(runId, host, port, secretName),
        },
        allowCidrs: config.sandboxAllowCidrs,
        warn: (msg) => logger.warn({ provider: "docker" }, msg),
        info: (msg) => logger.info({ provider: "docker" }, msg),
        debug: (msg) => logger.debug({ provider: "docker" }, msg),
        caFile: sandboxTrust,
        warmPool: config.warmPool,
        warmNetworks: config.warmNetworks,
      }),
    );
  } else if (config.defaultProvider === "docker") {
    throw new Error(`--default-provider docker, but there is no Docker engine socket at ${config.dockerSocket} (--docker-socket)`);
  }
  if (config.modalImage) {
    if (config.modalTunnelCa) trustRunnerCa(await readCaFile(config.modalTunnelCa, "--modal-tunnel-ca"));
    // Loaded only here: the SDK (with its protobuf runtime) costs every other daemon memory and start-up.
    const { ModalProvider } = await import("./sandbox/modal/modal-provider.js");
    providers.set(
      "modal",
      new ModalProvider({
        instanceId: instance,
        appName: config.modalApp || `paddock-${instance}`,
        environment: config.modalEnvironment,
        image: config.modalImage,
        tokenId: config.modalTokenId,
        tokenSecret: config.modalTokenSecret,
        serverUrl: config.modalServerUrl,
        root: config.dataDir,
        cpus: config.modalCpus,
        memoryBytes: config.modalMemory,
        graceMs: config.graceTime,
        runnerStartTimeoutMs: 120_000,
        callTimeoutMs: Math.max(1000, config.modalCallTimeout),
        snapshots: createSnapshotsRepository(db),
        snapshotMaxAgeMs: 7 * 24 * 3600_000,
        tokenFor: (runId) => issueSandboxToken(keys, runId, 3600),
        publicKeyPem: keys.publicKeyPem,
        log: (level, message, fields) => logger[level](fields, message),
        exitSnapshots: config.modalExitSnapshots === "on",
        installPaddock: config.modalInstallPaddock ? resolve(config.modalInstallPaddock) : "",
        warmPool: config.warmPool,
      }),
    );
  } else if (config.defaultProvider === "modal") {
    throw new ConfigError("--default-provider modal, but the modal provider is not configured (--modal-image)");
  }
  const runs = new RunManager({
    egress: egressAudit,
    root: config.dataDir,
    github,
    handoffs: new Handoffs(join(config.dataDir, "handoffs"), config.handoffMaxBytes),
    tasks,
    environments,
    runs: runsRepo,
    providers,
    keys,
    logger,
    observer: metrics,
    settings: {
      defaultAgentCommand: config.agentCommand ? ["sh", "-c", config.agentCommand] : null,
      defaultTimeoutMs: config.defaultTimeout,
      defaultProvider: config.defaultProvider,
      maxConcurrentRuns: config.maxConcurrentRuns,
      maxConcurrentRunsPerTeam: config.maxConcurrentRunsPerTeam,
      maxQueuedRuns: config.maxQueuedRuns,
      maxQueuedRunsPerTeam: config.maxQueuedRunsPerTeam,
      reconcileConcurrency: config.reconcileConcurrency,
      pollWaitMs: opts.pollWaitMs ?? 20_000,
      reapIntervalMs: 60_000,
      logBudget: { maxBytes: config.logMaxBytes, maxLines: config.logMaxLines },
      sandboxImages,
      handoffKeep: config.handoffKeep,
    },
  });
  const shutdown = new AbortController();
  // Every open stream listens on it: hundreds of followers are expected, not a leak.
  setMaxListeners(0, shutdown.signal);
  const tokens = createTokensRepository(db);
  const apiTokens = createApiTokens(tokens);
  const adminTokenFile = await apiTokens.bootstrapAdmin(config.dataDir);
  if (adminTokenFile) logger.warn({ file: adminTokenFile }, "first start: an admin API token was written to this file (0600); keep it safe");
  // The API (Connect, protobuf, every service's descriptors) is built at its first request:
  // a daemon that only answers probes, scrapes and the web UI never loads it.
  let api: Promise<ApiHandlers> | undefined;
  const loadApi = () =>
    (api ??= import("./api/api-handlers.js").then((m) =>
      m.createApiHandlers({
        tasks: createTasks(tasks),
        runs,
        gitHost: config.gitHost,
        apiTokens,
        environments,
        providers: new Set(providers.keys()),
        sandboxImages,
        logger,
        shutdownSignal: shutdown.signal,
      }),
    ));
  const apiHandler =
    (transport: "tcp" | "unix"): RequestHandler =>
    (req, res) =>
      void loadApi().then(
        (made) => made[transport](req, res),
        (error: unknown) => {
          logger.error({ err: error }, "the API could not be loaded");
          if (!res.headersSent) res.writeHead(500);
          res.end();
        },
      );
  const initialised = new Set<string>();
  const readiness = createReadiness(
    { store: () => probeWritable(db), uninitialisedProviders: () => [...providers.keys()].filter((name) => !initialised.has(name)) },
    logger,
  );
  const plain = (next: RequestHandler) => withPlainEndpoints(next, { metrics, readiness, logger });
  const webAssets = await loadWebAssets();
  if (!webAssets) logger.warn("the web UI is not built (npm run build:web): / answers 404");
  // CORS outermost: it answers preflights for every path. Only TCP: the socket has no browsers.
  // Connect (with protobuf's runtime) loads at the first API request; CORS needs its header lists only when configured.
  const tcp = withWebUi(plain(apiHandler("tcp")), webAssets);
  const handlers = {
    tcp: config.corsOrigin.length > 0 ? (await import("./api/cors.js")).withCors(tcp, config.corsOrigin) : tcp,
    unix: withWebUi(plain(apiHandler("unix")), webAssets),
  };
  let listener: Listener | undefined;
  return {
    runs,
    providers,
    handlers,
    readiness,
    async start(override) {
      for (const provider of providers.values()) {
        const problem = await provider.init?.();
        if (problem) logger.warn({ provider: provider.name, problem }, "provider can run unrestricted sandboxes only");
        initialised.add(provider.name);
      }
      await runs.restore();
      for (const env of environmentsRepo.withWarmPool()) warm(env);
      const tls = config.tlsCert ? { cert: await readFile(config.tlsCert), key: await readFile(config.tlsKey) } : undefined;
      const connections = {
        idleTimeoutMs: config.idleTimeout,
        headersTimeoutMs: config.headersTimeout,
        maxConnections: config.maxConnections,
        maxConnectionsPerAddress: config.maxConnectionsPerAddress,
        keepAliveIntervalMs: config.keepaliveInterval,
      };
      listener = await listen(handlers, { ...(override ?? { ...config.listen, socketPath: config.socket || undefined }), tls, connections });
      logger.info({ address: `${listener.host}:${listener.port}`, socket: listener.socketPath, dataDir: config.dataDir }, "paddock listening");
      return listener;
    },
    async stop() {
      // gRPC health watchers hear NOT_SERVING (only if anything loaded the API).
      if (api) (await api.catch(() => null))?.health.shutdown();
      // Open streams end with UNAVAILABLE (api/shutdown.ts); close() lets them send that end.
      if (api) shutdown.abort((await import("./api/shutdown.js")).shutdownReason());
      else shutdown.abort(); // nothing of the API was served: no stream to end with UNAVAILABLE
      await listener?.close();
      await runs.stop();
      for (const provider of providers.values()) await provider.close?.();
      db.close();
      dataDirLock.release();
    },
  };
}

async function readCaFile(path: string, flag: string): Promise<string> {
  const text = await readFile(path, "utf8").catch((error: unknown) => {
    throw new ConfigError(`${flag}: cannot read ${path}: ${(error as Error).message}`);
  });
  if (!text.includes("-----BEGIN CERTIFICATE-----")) throw new ConfigError(`${flag}: ${path} holds no PEM certificate`);
  return text;
}

/** The operator's CA files must hold PEM certificates: a typo is found at start, not in every run. */
async function checkCaFile(path: string, flag: string): Promise<void> {
  await readCaFile(path, flag);
}

/**
 * What docker sandboxes trust besides the system's CAs: the operator's certificates and the
 * egress proxy's broker CA (certificates only), one file in the data dir, rewritten at start.
 */
async function sandboxTrustFile(dataDir: string, operatorCaFile: string, brokerCaPem: string): Promise<string> {
  const operator = operatorCaFile ? (await readFile(operatorCaFile, "utf8")).trim() + "\n" : "";
  const file = join(dataDir, "sandbox-ca.pem");
  // 0600 like everything in the data dir: docker mounts it read-only and the runner reads it as root.
  await writeFile(file, operator + brokerCaPem, { mode: 0o600 });
  await chmod(file, 0o600);
  return file;
}

/** How to start `paddock agent` from this process: the binary itself, or Node + tsx in development. */
export function runnerCommand(): string[] {
  const main = process.argv[1] ?? "";
  // Inside a `bun build --compile` binary the entry point lives in Bun's virtual /$bunfs.
  if (process.versions.bun && (main.startsWith("/$bunfs") || main.startsWith("B:/~BUN"))) return [process.execPath, "agent"];
  const here = dirname(fileURLToPath(import.meta.url));
  const entry = resolve(here, "main.ts");
  if (process.versions.bun) return [process.execPath, entry, "agent"];
  // Absolute: the runner starts in the run's worktree, where "tsx" would not resolve.
  return [process.execPath, "--import", import.meta.resolve("tsx"), entry, "agent"];
}

/** The daemon's GitHub: its API, where its repositories live, and its App when configured (the key is read once, here). */
async function gitHubSettings(config: Config): Promise<GitHubSettings> {
  const apiUrl = config.githubApiUrl.replace(/\/+$/, "");
  if (!config.githubAppId) return { apiUrl, webUrl: gitHubWebUrl(apiUrl), app: null };
  const privateKey = await readFile(config.githubAppKeyFile, "utf8").catch((error: NodeJS.ErrnoException) => {
    throw new ConfigError(`--github-app-key-file: cannot read ${config.githubAppKeyFile} (${error.code ?? error.message})`);
  });
  if (!/-----BEGIN (RSA )?PRIVATE KEY-----/.test(privateKey)) {
    throw new ConfigError(`--github-app-key-file: ${config.githubAppKeyFile} is not a PEM private key (GitHub gives one when you generate the App's key)`);
  }
  const app = gitHubAppAuth({ appId: config.githubAppId, privateKey, installationId: config.githubInstallationId, apiUrl });
  return { apiUrl, webUrl: gitHubWebUrl(apiUrl), app };
}
