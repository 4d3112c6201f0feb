#!/usr/bin/env node
// The only file that touches the process: argv, env, signals, exit.
import { fstatSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
// Only what every role needs is imported here; each role loads its own modules (the build
// splits them into chunks), so `--version`, the CLI and the runner in a sandbox load none of
// the daemon's, nor zod (the config and runner-env schemas cost milliseconds at every start).
import { EXIT, isParseArgsError } from "./cli/exit.js";
import type { Config, ConfigInput } from "./config.js";
import { defaultDataDir } from "./data-dir.js";
import { isGitHostToken } from "./runs/git-host-tokens.js";
import { PADDOCK_VERSION } from "./version.js";

const VERSION = PADDOCK_VERSION;

const help = (clientHelp: () => string) => `paddock ${VERSION} — runs coding-agent task runs in sandboxes

usage: paddock <command> [flags]      (paddock <command> --help for its flags)

daemon:
  serve            run the daemon (gRPC, Connect and gRPC-Web on one port, plus a unix socket)
  agent            the in-sandbox runner (started by the daemon, not by hand)
  install-systemd  write the daemon's systemd unit (--dry-run prints it)
  doctor           check git, the docker engine, images, iptables, the data dir and its lock
  cleanup          --instance: remove this instance's containers, snapshots, networks and
                   firewall chains (no daemon running, no live runs; --yes to do it)

client:
${clientHelp()}

exit codes: 0 ok · 1 failed (for logs -f: the run did not complete) · 2 bad usage or argument
            3 not found · 4 not possible in the run's state · 5 daemon unreachable`;


const SERVE_HELP = `usage: paddock serve [flags]

Every flag also reads from its environment variable; flags win over the environment,
which wins over the config file.

  --config FILE                JSON file with any of the settings below (camelCase keys)
  --data-dir DIR               database, keys, sandboxes (PADDOCK_DATA_DIR; default ~/.local/share/paddock)
  --listen HOST:PORT           TCP address (PADDOCK_LISTEN; default 127.0.0.1:7777)
  --socket PATH                unix socket, "" for none (PADDOCK_SOCKET; default DATA_DIR/paddock.sock)
  --tls-cert FILE, --tls-key FILE   TLS for the TCP listener, PEM (PADDOCK_TLS_CERT, PADDOCK_TLS_KEY)
  --idle-timeout DURATION      close a connection with no request in flight after this; open streams
                               are never cut (PADDOCK_IDLE_TIMEOUT; default 30s)
  --headers-timeout DURATION   a new connection must finish TLS and start a request within this
                               (PADDOCK_HEADERS_TIMEOUT; default 10s)
  --max-connections N          TCP connections at once; beyond it a small reserve serves health checks
                               only, the rest are refused (PADDOCK_MAX_CONNECTIONS; default 1000)
  --max-connections-per-address N   TCP connections at once from one address
                               (PADDOCK_MAX_CONNECTIONS_PER_ADDRESS; default 100)
  --keepalive-interval DURATION   HTTP/2 ping interval on connections with open streams; a peer that
                               misses one is dropped (PADDOCK_KEEPALIVE_INTERVAL; default 30s)
  --cors-origin LIST           browser origins, comma-separated (https://ui.example.com), whose pages may call
                               the API, or * for any; off by default: only the daemon's own web UI
                               (PADDOCK_CORS_ORIGIN)
  --egress-proxy-port PORT     port of the egress proxy on the sandbox network (PADDOCK_EGRESS_PROXY_PORT; 47830)
  --egress-host-map LIST       name=IPv4,… resolved by the egress proxy itself (PADDOCK_EGRESS_HOST_MAP)
  --egress-upstream-ca FILE    PEM CA certificates brokered destinations are verified against instead of
                               the system's (PADDOCK_EGRESS_UPSTREAM_CA; for tests and private gateways)
  --agent-command CMD          shell command run as the agent when a run gives none (PADDOCK_AGENT_COMMAND)
  --local-agent-uids RANGE     uids for local agents when the daemon is root, one per run: auto (600000-699999),
                               off (agents run as the daemon's user), or FIRST-LAST (PADDOCK_LOCAL_AGENT_UIDS)
  --local-work-dir DIR         local agents' workspaces when they have their own uids (PADDOCK_LOCAL_WORK_DIR;
                               default /var/lib/paddock-work/<instance>; the data dir itself stays 0700)
  --log-max-bytes SIZE         a run's log budget in bytes (PADDOCK_LOG_MAX_BYTES; default 1g) and
  --log-max-lines N            in lines (PADDOCK_LOG_MAX_LINES; default 10000000): past it lines are dropped,
                               and the log says exactly how many
  --handoff-max-bytes SIZE     largest handoff (paddock handoff pull/push) taken from a sandbox or
                               uploaded (PADDOCK_HANDOFF_MAX_BYTES; default 2g)
  --handoff-keep all|acp|none  which finished runs keep their state for a later handoff pull
                               (PADDOCK_HANDOFF_KEEP; default all; costs a git capture at cleanup)
  --default-provider NAME      sandbox provider for runs that name none: local, docker or modal (PADDOCK_DEFAULT_PROVIDER)
  --default-timeout DURATION   run deadline, e.g. 60m (PADDOCK_DEFAULT_TIMEOUT; default 60m)
  --max-concurrent-runs N      runs in progress at once; the rest queue (PADDOCK_MAX_CONCURRENT_RUNS; default 4)
  --max-concurrent-runs-per-team N   runs in progress at once per team, 0 for no limit of its own
                               (PADDOCK_MAX_CONCURRENT_RUNS_PER_TEAM; default 0). Teams take turns for free
                               slots; within a team, higher StartRun priority first, then the oldest
  --max-queued-runs N          queued runs at most; StartRun past it fails RESOURCE_EXHAUSTED
                               (PADDOCK_MAX_QUEUED_RUNS; default 10000)
  --max-queued-runs-per-team N the same per team (PADDOCK_MAX_QUEUED_RUNS_PER_TEAM; default 1000)
  --reconcile-concurrency N    after a restart, runs reconciled with their sandbox provider at once
                               (PADDOCK_RECONCILE_CONCURRENCY; default 8)
  --git-host URL               where owner/repo repositories live (PADDOCK_GIT_HOST; default https://github.com)
  --grace-time DURATION        SIGTERM → SIGKILL grace for a cancelled agent (PADDOCK_GRACE_TIME; default 10s)

pull requests from runs (the daemon pushes and opens them; sandboxes never get the credential):
  --github-app-id ID           the GitHub App paddock acts as (PADDOCK_GITHUB_APP_ID), with
  --github-app-key-file FILE   its private key, PEM (PADDOCK_GITHUB_APP_KEY_FILE) and
  --github-installation-id ID  its installation on your repositories (PADDOCK_GITHUB_INSTALLATION_ID);
                               without an App, a run's environment may hold a GITHUB_TOKEN secret
  --github-api-url URL         GitHub's API (PADDOCK_GITHUB_API_URL; default https://api.github.com;
                               GitHub Enterprise Server: https://HOST/api/v3)

docker provider (registered when the engine's socket exists):
  --docker-socket PATH         Docker Engine API socket (PADDOCK_DOCKER_SOCKET; default /var/run/docker.sock)
  --docker-image IMAGE         sandbox image, built by npm run images (PADDOCK_DOCKER_IMAGE; default paddock-sandbox:latest)
  --docker-cpus N              CPUs per sandbox (PADDOCK_DOCKER_CPUS; default 2)
  --docker-memory SIZE         memory per sandbox, e.g. 4g (PADDOCK_DOCKER_MEMORY; default 4g)
  --docker-pids N              process limit per sandbox (PADDOCK_DOCKER_PIDS; default 1024)
  --docker-runtime NAME        runc, or runsc for gVisor (PADDOCK_DOCKER_RUNTIME; default runc)
  --warm-pool N                started docker sandboxes kept ready per image, repository, network and limits (PADDOCK_WARM_POOL; default 0)
  --warm-networks N            network namespaces kept set up per docker network runs use, so a sandbox not from the
                               warm pool starts without waiting for its network (PADDOCK_WARM_NETWORKS; default 1; 0: off)
  --sandbox-allow-cidrs LIST   IPv4 addresses/CIDRs, comma-separated, that unrestricted sandboxes may reach
                               although private, link-local or the host's own (PADDOCK_SANDBOX_ALLOW_CIDRS)
  --sandbox-images LIST        images, comma-separated, that runs and environments may ask for besides
                               --docker-image (PADDOCK_SANDBOX_IMAGES; default: only --docker-image)
  --sandbox-ca-file FILE       PEM CA certificates every sandbox trusts, e.g. a TLS-inspecting proxy's
                               (PADDOCK_SANDBOX_CA_FILE)

modal provider (registered when --modal-image is set; see README "Running on Modal"):
  --modal-image IMAGE          registry image with paddock on PATH, git and the agents (PADDOCK_MODAL_IMAGE)
  --modal-app NAME             Modal App the sandboxes live in (PADDOCK_MODAL_APP; default paddock-<instance>)
  --modal-environment NAME     Modal environment (PADDOCK_MODAL_ENVIRONMENT; default the SDK's: MODAL_ENVIRONMENT or profile)
  --modal-token-id ID, --modal-token-secret SECRET   credentials (PADDOCK_MODAL_TOKEN_ID, PADDOCK_MODAL_TOKEN_SECRET;
                               default the SDK's: MODAL_TOKEN_ID/MODAL_TOKEN_SECRET or ~/.modal.toml)
  --modal-server-url URL       control plane (PADDOCK_MODAL_SERVER_URL; default MODAL_SERVER_URL or api.modal.com)
  --modal-tunnel-ca FILE       PEM CA trusted for the runners' tunnels besides public roots (PADDOCK_MODAL_TUNNEL_CA)
  --modal-cpus N, --modal-memory SIZE   per sandbox unless the run sets limits (PADDOCK_MODAL_CPUS, PADDOCK_MODAL_MEMORY;
                               default 2, 4g)
  --modal-exit-snapshots on|off   keep an exit snapshot of every sandbox, to recover a dead one's work
                               (PADDOCK_MODAL_EXIT_SNAPSHOTS; default off)
  --modal-install-paddock FILE   a Linux paddock binary brought into --modal-image (a plain image with git) once per
                               version, then snapshotted (PADDOCK_MODAL_INSTALL_PADDOCK; default: the image has paddock)
  --modal-call-timeout DURATION   longest wait on one control-plane call (PADDOCK_MODAL_CALL_TIMEOUT; default 30s)

  --log-level LEVEL            trace…fatal, silent (PADDOCK_LOG_LEVEL; default info)
  --log-format FORMAT          auto (pretty on a terminal, journal when stdout is the systemd journal, else json),
                               json, pretty, journal: JSON lines with a <priority> prefix (PADDOCK_LOG_FORMAT)`;

/** The longest a SIGTERM'd daemon takes to exit: streams end, the database closes, or it is cut. */
const SHUTDOWN_LIMIT_MS = 30_000;

/**
 * The daemon's config from serve's flags, its environment and config file; null for --help.
 * doctor and cleanup take the same flags, so they look at what `serve` would use.
 */
async function serveConfig(argv: string[], extra: Record<string, { type: "boolean" }> = {}): Promise<{ config: Config; values: Record<string, unknown> } | null> {
  const { ConfigError, ENV_NAMES, kebab, loadConfig } = await import("./config.js");
  const keys = Object.keys(ENV_NAMES) as (keyof ConfigInput)[];
  const { values } = parseArgs({
    args: argv,
    options: {
      help: { type: "boolean", short: "h" },
      config: { type: "string" },
      ...extra,
      ...Object.fromEntries(keys.map((k) => [kebab(k), { type: "string" as const }])),
    },
    strict: true,
  });
  if (values.help) return null;
  const flags = Object.fromEntries(keys.map((k) => [k, (values as Record<string, unknown>)[kebab(k)]])) as ConfigInput;
  let file: ConfigInput = {};
  const configPath = (values.config as string | undefined) ?? process.env.PADDOCK_CONFIG;
  if (configPath) {
    try {
      file = JSON.parse(readFileSync(configPath, "utf8")) as ConfigInput;
    } catch (error) {
      throw new ConfigError(`config file ${configPath}: ${(error as Error).message}`);
    }
  }
  return { config: loadConfig(process.env, flags, file), values };
}

async function serve(argv: string[]): Promise<number> {
  const parsed = await serveConfig(argv);
  if (!parsed) {
    process.stdout.write(SERVE_HELP + "\n");
    return EXIT.ok;
  }
  const { config } = parsed;
  const { createApp, runnerCommand } = await import("./app.js");
  const { createLogger } = await import("./logger.js");
  const logger = await createLogger({ level: config.logLevel, format: config.logFormat, isTty: !!process.stdout.isTTY, isJournal: stdoutIsJournal() });
  const app = await createApp({ config, logger, runnerCommand: runnerCommand(), baseEnv: runnerEnv(process.env) });
  const listener = await app.start();
  // Under systemd (Type=notify): READY=1 once listening, WATCHDOG=1 while the store takes
  // writes, STOPPING=1 at the signal. Outside it, nothing.
  const { serviceNotifier } = await import("./systemd/sd-notify.js");
  const notifier = await serviceNotifier(process.env, process.pid);
  const notify = (what: string, send: () => void) => {
    try {
      send();
    } catch (error) {
      logger.warn({ err: error }, `could not tell systemd ${what}`);
    }
  };
  // Handlers before the "listening" line: whoever waits for that line may signal at once.
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      logger.info({ signal }, "shutting down; live runs resume at the next start");
      if (notifier) notify("STOPPING=1", () => notifier.stopping(`shutting down (${signal}); live runs resume at the next start`));
      // Bounded: a stuck provider or client must not keep the daemon from exiting.
      setTimeout(() => {
        logger.warn({}, "shutdown took too long; exiting now");
        process.exit(EXIT.failed);
      }, SHUTDOWN_LIMIT_MS).unref();
      // A second signal means "now".
      const now = () => process.exit(EXIT.failed);
      process.once("SIGINT", now);
      process.once("SIGTERM", now);
      resolve();
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
  });
  const where = `http://${listener.host}:${listener.port}${listener.socketPath ? ` and unix:${listener.socketPath}` : ""}`;
  let watchdog: NodeJS.Timeout | undefined;
  if (notifier) {
    notify("READY=1", () => notifier.ready(`listening on ${where}`));
    if (notifier.watchdogIntervalMs !== null) {
      // A daemon whose store no longer takes writes stops answering the watchdog: systemd restarts it.
      watchdog = setInterval(() => {
        if (app.readiness().ready) notify("WATCHDOG=1", () => notifier.watchdog());
      }, notifier.watchdogIntervalMs);
      watchdog.unref();
    }
  }
  process.stderr.write(`paddock listening on ${where}\n`);
  await stopped;
  clearInterval(watchdog);
  await app.stop();
  notifier?.close();
  return EXIT.ok;
}

/** This binary's path when it is the compiled one (its entry point lives in Bun's virtual /$bunfs). */
function compiledBinary(): string | null {
  const main = process.argv[1] ?? "";
  return process.versions.bun && (main.startsWith("/$bunfs") || main.startsWith("B:/~BUN")) ? process.execPath : null;
}

/** Whether stdout is connected to the journal: JOURNAL_STREAM names its device and inode (systemd.exec(5)). */
function stdoutIsJournal(): boolean {
  const [dev, ino] = (process.env.JOURNAL_STREAM ?? "").split(":");
  if (!dev || !ino) return false;
  try {
    const st = fstatSync(1, { bigint: true });
    return st.dev === BigInt(dev) && st.ino === BigInt(ino);
  } catch {
    return false;
  }
}

/** What systemd gives the daemon alone: an agent must not speak for the service (sd_notify(3)'s unset_environment). */
const SERVICE_ONLY = new Set(["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"]);

/** The daemon's own settings stay out of the runner's and agent's environment. */
function runnerEnv(env: NodeJS.ProcessEnv): Record<string, string | undefined> {
  // Nor git host tokens the daemon's user may have: a sandbox gets them only from an environment that grants them.
  return Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith("PADDOCK_") && k !== "NODE_OPTIONS" && !SERVICE_ONLY.has(k) && !isGitHostToken(k)));
}

async function agent(): Promise<number> {
  const log = (msg: string) => process.stderr.write(`${new Date().toISOString()} ${msg}\n`);
  // A warm pool's runner has no run until the daemon claims it: the run's variables come with the claim.
  const pooled = !!process.env.PADDOCK_POOL_CLAIM;
  // Other runs' state in a sandbox made from a snapshot goes before anything is served (modal).
  const states = (await import("./agent/runner-env.js")).RunnerEnvSchema.pick({ PADDOCK_STATE_DIR: true, PADDOCK_OTHER_STATES: true }).parse(process.env);
  if (states.PADDOCK_OTHER_STATES === "drop") {
    const dropped = (await import("./agent/state-dir.js")).dropOtherStates(states.PADDOCK_STATE_DIR);
    if (dropped.length > 0) log(`removed the state of ${dropped.length} other run(s) this sandbox's image was taken with`);
  }
  // A pool runner loads the run's runner while it waits, so a claim does not wait for that.
  const loaded = pooled ? import("./agent/runner.js") : null;
  const claim = pooled ? await (await import("./agent/runner-pool.js")).waitForClaim(process.env, log) : null;
  const env = claim?.env ?? process.env;
  const { readRunnerEnvironment } = await import("./agent/runner-env.js");
  const settings = readRunnerEnvironment(env);
  const user = settings.PADDOCK_AGENT_UID !== undefined ? { uid: settings.PADDOCK_AGENT_UID, gid: settings.PADDOCK_AGENT_GID! } : null;
  // The checkout starts first: the runner (the larger part of this binary) loads while git clones.
  const checkedOut = settings.PADDOCK_SOURCE
    ? import("./agent/checkout.js").then(({ checkout, clonedByProvider }) =>
        checkout({
          runId: settings.PADDOCK_RUN_ID,
          source: settings.PADDOCK_SOURCE!,
          workdir: settings.PADDOCK_WORKDIR,
          stateDir: settings.PADDOCK_STATE_DIR,
          branch: settings.PADDOCK_BRANCH,
          resultBranch: settings.PADDOCK_RESULT_BRANCH,
          user,
          home: settings.PADDOCK_AGENT_HOME,
          log,
          handoff: settings.PADDOCK_HANDOFF ? JSON.parse(settings.PADDOCK_HANDOFF) : null,
          prepared: claim?.prepared,
          cloned: settings.PADDOCK_CLONED_FD === undefined ? null : clonedByProvider(settings.PADDOCK_CLONED_FD),
        }),
      )
    : null;
  checkedOut?.catch(() => undefined); // seen below
  const { runRunner } = await (loaded ?? import("./agent/runner.js"));
  try {
    await checkedOut;
  } catch (error) {
    // The provider reads this line from the sandbox's output to say why provisioning failed.
    const why = `checkout failed: ${((error as { stderr?: string }).stderr || (error as Error).message).trim()}`;
    process.stderr.write(`paddock agent: ${why}\n`);
    await claim?.answer(why);
    return EXIT.failed;
  }
  await runRunner({ settings, env, log, onListening: claim ? () => void claim.answer(null) : undefined });
  return EXIT.ok;
}

/** A reader that has gone (`paddock logs RUN | head`) ends the command quietly, as git's do. */
function readerGone(error: NodeJS.ErrnoException): void {
  if (error.code !== "EPIPE") throw error;
  process.exit(EXIT.ok);
}

let stdoutStream: NodeJS.WriteStream | null = null;
/** process.stdout, from now on the only way to stdout (nothing written is reordered). */
function stdoutAsStream(): NodeJS.WriteStream {
  if (!stdoutStream) {
    stdoutStream = process.stdout;
    stdoutStream.on("error", readerGone);
  }
  return stdoutStream;
}

/**
 * Writes to stdout with write(2): in the compiled binary, process.stdout (a Node stream Bun
 * builds on first use) cost every CLI call ~10 ms of start-up. A stdout that would block
 * (EAGAIN: a non-blocking pipe that is full), or a command that takes the stream itself,
 * switches to process.stdout, which waits.
 */
function writeOut(text: string): void {
  try {
    if (stdoutStream) {
      stdoutStream.write(text);
      return;
    }
    let rest = Buffer.from(text);
    while (rest.length > 0) {
      try {
        rest = rest.subarray(writeSync(1, rest));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EAGAIN") throw error;
        stdoutAsStream().write(rest);
        return;
      }
    }
  } catch (error) {
    readerGone(error as NodeJS.ErrnoException);
  }
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === "--help" || cmd === "-h" || cmd === "help") {
    writeOut(help((await import("./cli/commands.js")).clientHelp) + "\n");
    return cmd ? EXIT.ok : EXIT.usage;
  }
  if (cmd === "--version" || cmd === "version") {
    writeOut(`paddock ${VERSION}\n`);
    return EXIT.ok;
  }
  if (cmd === "serve") return serve(rest);
  if (cmd === "agent") return agent();
  if (cmd === "doctor" || cmd === "cleanup") {
    const parsed = await serveConfig(rest, cmd === "cleanup" ? { instance: { type: "boolean" }, yes: { type: "boolean" } } : {});
    const io = { out: (l: string) => process.stdout.write(l + "\n"), err: (l: string) => process.stderr.write(l + "\n") };
    if (cmd === "doctor") {
      const { DOCTOR_HELP, doctor } = await import("./ops/doctor.js");
      if (!parsed) return (io.out(DOCTOR_HELP), EXIT.ok);
      return doctor(parsed.config, io);
    }
    const { CLEANUP_HELP, cleanupInstance } = await import("./ops/cleanup.js");
    if (!parsed) return (io.out(CLEANUP_HELP), EXIT.ok);
    if (!parsed.values.instance) {
      io.err(`paddock: cleanup needs --instance (what it removes is this data dir's instance's)\n${CLEANUP_HELP}`);
      return EXIT.usage;
    }
    return cleanupInstance(parsed.config, io, { yes: !!parsed.values.yes });
  }
  if (cmd === "install-systemd") {
    const { installSystemd } = await import("./cli/install-systemd.js");
    return installSystemd(rest, { out: (l) => process.stdout.write(l + "\n"), err: (l) => process.stderr.write(l + "\n") }, compiledBinary());
  }
  const controller = new AbortController();
  process.once("SIGINT", () => controller.abort());
  const dataDir = process.env.PADDOCK_DATA_DIR || defaultDataDir(process.env);
  const { runClientCommand } = await import("./cli/commands.js");
  return runClientCommand(argv, {
    out: (l) => writeOut(l + "\n"),
    err: (l) => process.stderr.write(l + "\n"),
    env: process.env,
    cwd: process.cwd(),
    defaultSocket: process.env.PADDOCK_SOCKET || join(dataDir, "paddock.sock"),
    signal: controller.signal,
    // Getters: opening stdin costs milliseconds, and only a few commands read it.
    stdio: {
      get input() {
        return process.stdin;
      },
      get output() {
        return stdoutAsStream();
      },
    },
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Streams, timers and sockets of a finished command must not keep the process alive.
    if (process.argv[2] !== "serve") setTimeout(() => process.exit(code), 50).unref();
    else process.exit(code);
  },
  (error: unknown) => {
    // By name: the classes live in modules a role may never have loaded.
    const name = (error as Error | null)?.name;
    if (name === "ConfigError" || name === "RunnerEnvError" || isParseArgsError(error)) {
      process.stderr.write(`paddock: ${(error as Error).message}\n`);
      process.exit(EXIT.usage);
    }
    // Not our bug but the operator's situation: the message says it all.
    if (name === "DataDirLockedError") {
      process.stderr.write(`paddock: ${(error as Error).message}\n`);
      process.exit(EXIT.failed);
    }
    process.stderr.write(`paddock: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(EXIT.failed);
  },
);
