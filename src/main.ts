#!/usr/bin/env node
// The only file that touches the process: argv, env, signals, exit.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
// Only what every role needs is imported here; each role loads its own modules, so the
// runner in a sandbox carries none of the daemon's (measured: its idle RSS).
import { EXIT, isParseArgsError } from "./cli/exit.js";
import { ConfigError, defaultDataDir, ENV_NAMES, kebab, loadConfig, type ConfigInput } from "./config.js";
import { readRunnerEnvironment, RunnerEnvError } from "./agent/runner-env.js";
import { PADDOCK_VERSION } from "./version.js";

const VERSION = PADDOCK_VERSION;

const help = (clientHelp: () => string) => `paddock ${VERSION} — runs coding-agent task runs in sandboxes

usage: paddock <command> [flags]      (paddock <command> --help for its flags)

daemon:
  serve            run the daemon (gRPC, Connect and gRPC-Web on one port, plus a unix socket)
  agent            the in-sandbox runner (started by the daemon, not by hand)

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
  --egress-proxy-port PORT     port of the egress proxy on the sandbox network (PADDOCK_EGRESS_PROXY_PORT; 47830)
  --egress-host-map LIST       name=IPv4,… resolved by the egress proxy itself (PADDOCK_EGRESS_HOST_MAP)
  --agent-command CMD          shell command run as the agent when a run gives none (PADDOCK_AGENT_COMMAND)
  --local-agent-uids RANGE     uids for local agents when the daemon is root, one per run: auto (600000-699999),
                               off (agents run as the daemon's user), or FIRST-LAST (PADDOCK_LOCAL_AGENT_UIDS)
  --local-work-dir DIR         local agents' workspaces when they have their own uids (PADDOCK_LOCAL_WORK_DIR;
                               default /var/lib/paddock-work/<instance>; the data dir itself stays 0700)
  --log-max-bytes SIZE         a run's log budget in bytes (PADDOCK_LOG_MAX_BYTES; default 1g) and
  --log-max-lines N            in lines (PADDOCK_LOG_MAX_LINES; default 10000000): past it lines are dropped,
                               and the log says exactly how many
  --default-provider NAME      sandbox provider for runs that name none: local, docker or modal (PADDOCK_DEFAULT_PROVIDER)
  --default-timeout DURATION   run deadline, e.g. 60m (PADDOCK_DEFAULT_TIMEOUT; default 60m)
  --max-concurrent-runs N      runs in progress at once; the rest queue (PADDOCK_MAX_CONCURRENT_RUNS; default 4)
  --git-host URL               where owner/repo repositories live (PADDOCK_GIT_HOST; default https://github.com)
  --grace-time DURATION        SIGTERM → SIGKILL grace for a cancelled agent (PADDOCK_GRACE_TIME; default 10s)

docker provider (registered when the engine's socket exists):
  --docker-socket PATH         Docker Engine API socket (PADDOCK_DOCKER_SOCKET; default /var/run/docker.sock)
  --docker-image IMAGE         sandbox image, built by npm run images (PADDOCK_DOCKER_IMAGE; default paddock-sandbox:latest)
  --docker-cpus N              CPUs per sandbox (PADDOCK_DOCKER_CPUS; default 2)
  --docker-memory SIZE         memory per sandbox, e.g. 4g (PADDOCK_DOCKER_MEMORY; default 4g)
  --docker-pids N              process limit per sandbox (PADDOCK_DOCKER_PIDS; default 1024)
  --docker-runtime NAME        runc, or runsc for gVisor (PADDOCK_DOCKER_RUNTIME; default runc)
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
  --log-format FORMAT          auto (pretty on a terminal), json, pretty (PADDOCK_LOG_FORMAT)`;

/** The longest a SIGTERM'd daemon takes to exit: streams end, the database closes, or it is cut. */
const SHUTDOWN_LIMIT_MS = 30_000;

async function serve(argv: string[]): Promise<number> {
  const keys = Object.keys(ENV_NAMES) as (keyof ConfigInput)[];
  const { values } = parseArgs({
    args: argv,
    options: {
      help: { type: "boolean", short: "h" },
      config: { type: "string" },
      ...Object.fromEntries(keys.map((k) => [kebab(k), { type: "string" as const }])),
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(SERVE_HELP + "\n");
    return EXIT.ok;
  }
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
  const config = loadConfig(process.env, flags, file);
  const { createApp, runnerCommand } = await import("./app.js");
  const { createLogger } = await import("./logger.js");
  const logger = createLogger({ level: config.logLevel, format: config.logFormat, isTty: !!process.stdout.isTTY });
  const app = await createApp({ config, logger, runnerCommand: runnerCommand(), baseEnv: runnerEnv(process.env) });
  const listener = await app.start();
  // Handlers before the "listening" line: whoever waits for that line may signal at once.
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      logger.info({ signal }, "shutting down; live runs resume at the next start");
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
  process.stderr.write(`paddock listening on http://${listener.host}:${listener.port}${listener.socketPath ? ` and unix:${listener.socketPath}` : ""}\n`);
  await stopped;
  await app.stop();
  return EXIT.ok;
}

/** The daemon's own settings stay out of the runner's and agent's environment. */
function runnerEnv(env: NodeJS.ProcessEnv): Record<string, string | undefined> {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith("PADDOCK_") && k !== "NODE_OPTIONS"));
}

async function agent(): Promise<number> {
  const settings = readRunnerEnvironment(process.env);
  const { checkout } = await import("./agent/checkout.js");
  const { runRunner } = await import("./agent/runner.js");
  const log = (msg: string) => process.stderr.write(`${new Date().toISOString()} ${msg}\n`);
  const user = settings.PADDOCK_AGENT_UID !== undefined ? { uid: settings.PADDOCK_AGENT_UID, gid: settings.PADDOCK_AGENT_GID! } : null;
  if (settings.PADDOCK_SOURCE) {
    try {
      checkout({
        runId: settings.PADDOCK_RUN_ID,
        source: settings.PADDOCK_SOURCE,
        workdir: settings.PADDOCK_WORKDIR,
        stateDir: settings.PADDOCK_STATE_DIR,
        branch: settings.PADDOCK_BRANCH,
        resultBranch: settings.PADDOCK_RESULT_BRANCH,
        user,
        home: settings.PADDOCK_AGENT_HOME,
        log,
      });
    } catch (error) {
      // The provider reads this line from the sandbox's output to say why provisioning failed.
      process.stderr.write(`paddock agent: checkout failed: ${((error as { stderr?: string }).stderr || (error as Error).message).trim()}\n`);
      return EXIT.failed;
    }
  }
  await runRunner({ settings, env: process.env, log });
  return EXIT.ok;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === "--help" || cmd === "-h" || cmd === "help") {
    process.stdout.write(help((await import("./cli/commands.js")).clientHelp) + "\n");
    return cmd ? EXIT.ok : EXIT.usage;
  }
  if (cmd === "--version" || cmd === "version") {
    process.stdout.write(`paddock ${VERSION}\n`);
    return EXIT.ok;
  }
  if (cmd === "serve") return serve(rest);
  if (cmd === "agent") return agent();
  const controller = new AbortController();
  process.once("SIGINT", () => controller.abort());
  const dataDir = process.env.PADDOCK_DATA_DIR || defaultDataDir(process.env);
  const { runClientCommand } = await import("./cli/commands.js");
  return runClientCommand(argv, {
    out: (l) => process.stdout.write(l + "\n"),
    err: (l) => process.stderr.write(l + "\n"),
    env: process.env,
    cwd: process.cwd(),
    defaultSocket: process.env.PADDOCK_SOCKET || join(dataDir, "paddock.sock"),
    signal: controller.signal,
    stdio: { input: process.stdin, output: process.stdout },
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
    if (error instanceof ConfigError || error instanceof RunnerEnvError || isParseArgsError(error)) {
      process.stderr.write(`paddock: ${(error as Error).message}\n`);
      process.exit(EXIT.usage);
    }
    // Not our bug but the operator's situation: the message says it all.
    if ((error as Error | null)?.name === "DataDirLockedError") {
      process.stderr.write(`paddock: ${(error as Error).message}\n`);
      process.exit(EXIT.failed);
    }
    process.stderr.write(`paddock: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(EXIT.failed);
  },
);
