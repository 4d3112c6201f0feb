import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { EXIT, isParseArgsError } from "./exit.js";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { readFileSync } from "node:fs";
import type { Readable, Writable } from "node:stream";
import { PADDOCK_VERSION } from "../version.js";
import { resolve } from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import type { Task } from "../gen/paddock/v1/task_pb.js";
import type {
  LogEntry,
  PermissionPolicy,
  RunEvent,
  RunMode,
  RunStatus,
  StreamLogsResponse,
  TaskRun,
} from "../gen/paddock/v1/task_run_pb.js";
import { parseDuration } from "../duration.js";
import type { Environment, NetworkAccess, SecretBroker, SecretInput } from "../gen/paddock/v1/environment_pb.js";
import type { Token } from "../gen/paddock/v1/token_pb.js";
import type { Clients } from "./client.js";
import type * as Wire from "./wire.js";
import { parseSecretFlags, readSecretValues } from "./secret-input.js";

/**
 * The protobuf and Connect parts, loaded once a command is about to talk to the daemon:
 * their descriptors and transports cost most of a CLI call's start-up, and `--help` and
 * usage errors need none of them. Of the generated files, only the command's services'.
 */
let w: typeof Wire & Wire.Generated;
let NETWORKS: Record<string, NetworkAccess>;
let POLICIES: Record<string, PermissionPolicy>;
let MODES: Record<string, RunMode>;

/** The services each group of commands calls (`task list` calls TaskService alone); any other command loads all. */
const SERVICES_OF_GROUP: Record<string, readonly Wire.ServiceName[]> = { task: ["tasks"], token: ["tokens"] };
const ALL_SERVICES: readonly Wire.ServiceName[] = ["tasks", "runs", "environments", "tokens"];

async function loadWire(services: readonly Wire.ServiceName[] = []): Promise<void> {
  const core = w ?? (await import("./wire.js"));
  w = Object.assign({}, core, await core.loadGenerated(services)) as typeof w;
  if (w.NetworkAccess) NETWORKS = { trusted: w.NetworkAccess.TRUSTED, full: w.NetworkAccess.FULL, custom: w.NetworkAccess.CUSTOM };
  if (w.RunMode) {
    POLICIES = { auto_allow: w.PermissionPolicy.AUTO_ALLOW, ask: w.PermissionPolicy.ASK, deny: w.PermissionPolicy.DENY };
    MODES = { background: w.RunMode.BACKGROUND, interactive: w.RunMode.INTERACTIVE };
  }
}

export interface CliIo {
  out: (line: string) => void;
  err: (line: string) => void;
  env: Record<string, string | undefined>;
  cwd: string;
  /** Where the daemon's unix socket lives by default. */
  defaultSocket: string;
  signal: AbortSignal;
  /** The process's own stdin and stdout, for commands that speak a protocol on them (acp). */
  stdio?: { input: Readable; output: Writable };
}

/** Exit codes, documented in `paddock --help`. */
export { EXIT, isParseArgsError };

export class UsageError extends Error {
  override name = "UsageError";
}

type Options = NonNullable<ParseArgsConfig["options"]>;
interface Command {
  usage: string;
  summary: string;
  help: string;
  options: Options;
  run(args: { values: Record<string, string | boolean | undefined>; positionals: string[]; c: Clients; io: CliIo; json: boolean }): Promise<number>;
}

const common: Options = {
  address: { type: "string" },
  token: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
};
const COMMON_HELP = `  --address ADDR   daemon address: http://host:port or unix:/path (env PADDOCK_ADDRESS;
                   default: the data dir's socket if present, else http://127.0.0.1:7777)
  --token TOKEN    API token for TCP addresses (env PADDOCK_TOKEN; the unix socket needs none)
  --json           print JSON (one object per line for streams)
  -h, --help       this help`;

const statusName = (s: RunStatus) => w.RunStatus[s] ?? String(s);
const when = (t?: Timestamp) => (t ? w.timestampDate(t).toISOString() : "-");

function json<D extends DescMessage>(schema: D, m: MessageShape<D>): string {
  return JSON.stringify(w.toJson(schema, m, { alwaysEmitImplicit: true }));
}

function showTask(t: Task): string {
  return [
    `task ${t.id} (#${t.taskNumber})`,
    `  title:      ${t.title}`,
    `  repository: ${t.repository}${t.repositoryUrl !== t.repository ? ` (${t.repositoryUrl})` : ""}`,
    `  origin:     ${t.origin}`,
    `  created:    ${when(t.createTime)}`,
  ].join("\n");
}

/** One event as a line: logs as `logs` prints them, the rest by kind. */
function showEvent(e: RunEvent): string {
  const k = e.kind;
  switch (k.case) {
    case "log":
      return showLog(k.value);
    case "agentUpdate":
      return `${String(e.seq).padStart(5)} [agent ${k.value.updateKind}${k.value.replayed ? ", replayed" : ""}] ${JSON.stringify(k.value.update).slice(0, 200)}`;
    case "prompt":
      return `${String(e.seq).padStart(5)} [prompt ${k.value.promptId} by ${k.value.by}] ${k.value.content.map((b) => (typeof b.text === "string" ? b.text : `(${String(b.type)})`)).join(" ")}`;
    case "permissionRequest":
      return `${String(e.seq).padStart(5)} [permission ${k.value.requestId}] ${typeof k.value.toolCall?.title === "string" ? k.value.toolCall.title : "a tool call"}: ${k.value.options.map((o) => `${o.optionId} (${o.name})`).join(", ")}`;
    case "permissionResolved":
      return `${String(e.seq).padStart(5)} [permission ${k.value.requestId}] ${k.value.optionId || "rejected"} by ${k.value.by}`;
    case "turnEnded":
      return `${String(e.seq).padStart(5)} [turn ended] ${k.value.stopReason}`;
    default:
      return `${String(e.seq).padStart(5)} [unknown event]`;
  }
}

function showRun(r: TaskRun): string {
  return [
    `run ${r.id} (task ${r.taskId}, run #${r.runNumber})`,
    `  status:   ${statusName(r.status)}  phase: ${r.phase}${r.queuePosition ? `  queue position: ${r.queuePosition}` : ""}${r.exitCode !== undefined ? `  exit code: ${r.exitCode}` : ""}`,
    ...(r.errorMessage ? [`  error:    ${r.errorMessage}`] : []),
    `  provider: ${r.provider}  branch: ${r.branch || "(default)"} → ${r.resultBranch}${r.resultCommit ? ` @ ${r.resultCommit.slice(0, 12)}` : ""}`,
    `  agent:    ${r.agentCommand.join(" ")}`,
    ...(r.pullRequestUrl ? [`  pull request: #${r.pullRequestNumber} ${r.pullRequestUrl}`] : r.openPullRequest ? ["  pull request: opened when the run completes"] : []),
    `  created:  ${when(r.createTime)}  deadline: ${when(r.deadline)}  cleaned: ${when(r.cleanedAt)}`,
    ...(r.phaseTimings.length ? [`  phases:   ${r.phaseTimings.map((t) => `${t.phase} ${t.duration ? seconds(t.duration) : "(now)"}`).join(" → ")}`] : []),
    ...(r.handedOffTime ? [`  handed off to ${r.handedOffTo || "local"} at ${when(r.handedOffTime)}`] : []),
  ].join("\n");
}

/** A protobuf Duration as "1.234s". */
function seconds(d: { seconds: bigint; nanos: number }): string {
  return `${(Number(d.seconds) + d.nanos / 1e9).toFixed(3)}s`;
}

function showLog(l: LogEntry): string {
  const tag = l.stream === "stdout" ? "" : `[${l.stream}] `;
  return `${String(l.seq).padStart(5)} ${tag}${l.text}`;
}

/** Follows page tokens until --limit items (default 50) or the end. */
async function* paged<T>(limit: unknown, fetch: (pageSize: number, pageToken: string) => Promise<{ items: T[]; next: string }>): AsyncGenerator<T> {
  let left = Number(limit ?? 50);
  if (!Number.isInteger(left) || left < 1) throw new UsageError("--limit must be a positive integer");
  let pageToken = "";
  do {
    const page = await fetch(Math.min(left, 1000), pageToken);
    yield* page.items.slice(0, left);
    left -= page.items.length;
    pageToken = page.next;
  } while (pageToken && left > 0);
}

function one(positionals: string[], what: string): string {
  if (positionals.length !== 1 || !positionals[0]) throw new UsageError(`expected exactly one ${what}`);
  return positionals[0];
}

const networkName = (n: NetworkAccess) => Object.entries(NETWORKS).find(([, v]) => v === n)?.[0] ?? "unspecified";
const list = (v: unknown) => (v as string[] | undefined) ?? [];

function durationFlag(flag: string, value: unknown) {
  const ms = parseDuration(String(value));
  if (ms === null || ms <= 0) throw new UsageError(`--${flag}: ${JSON.stringify(value)} is not a duration (examples: 90s, 30m, 2h)`);
  return w.durationFromMs(ms);
}

const ENV_OPTIONS: Options = {
  name: { type: "string" },
  network: { type: "string" },
  allow: { type: "string", multiple: true },
  "include-trusted": { type: "boolean" },
  var: { type: "string", multiple: true },
  secret: { type: "string", multiple: true },
  "setup-only-secret": { type: "string", multiple: true },
  broker: { type: "string", multiple: true },
  "setup-script": { type: "string" },
  provider: { type: "string" },
  image: { type: "string" },
  timeout: { type: "string" },
  "grant-git-tokens": { type: "boolean" },
  "no-grant-git-tokens": { type: "boolean" },
  "setup-network": { type: "string" },
  repository: { type: "string", multiple: true },
  "any-repository": { type: "boolean" },
  agent: { type: "string" },
  "acp-command": { type: "string", multiple: true },
  "agent-command": { type: "string", multiple: true },
  "no-agent": { type: "boolean" },
  mode: { type: "string" },
  permissions: { type: "string" },
  "idle-timeout": { type: "string" },
  "warm-pool": { type: "string" },
};
const nameOf = <T>(map: Record<string, T>, v: T) => Object.entries(map).find(([, x]) => x === v)?.[0] ?? "";

function choice<T>(flag: string, map: Record<string, T>, value: unknown): T {
  const v = map[String(value)];
  if (v === undefined) throw new UsageError(`--${flag}: ${JSON.stringify(value)} is not one of ${Object.keys(map).join(", ")}`);
  return v;
}
const ENV_HELP = `  --name NAME               unique within your team
  --network MODE            trusted (package registries and git hosts; the default), full
                            (anywhere) or custom (only --allow, plus trusted with --include-trusted)
  --allow DOMAIN            example.com, *.example.com or example.com:8443; repeatable
  --include-trusted         with --network custom, the trusted list too
  --var K=V                 a plain environment variable (shown in responses); repeatable
  --secret NAME             a secret whose value is read from stdin (all of it, one trailing
                            newline stripped); only one secret can come from stdin
  --secret NAME=@FILE       a secret read from FILE (one trailing newline stripped); repeatable.
                            Values are never taken from the command line, where ps shows them.
  --setup-only-secret ...   as --secret, but only the setup script sees it, never the agent
  --broker NAME,host=H,header=X[,template=T][,path=P]
  --broker NAME,host=H,basic=USER
                            keep secret NAME (given with --secret in the same command) out of
                            the sandbox: it holds paddock-brokered-NAME, and the egress proxy
                            sets header X (T: e.g. "Bearer {value}") or HTTP basic on HTTPS
                            requests to H (host, *.domain, optionally :port) under path P
  --setup-script FILE       a shell script run after checkout, before the agent
  --provider NAME           provider for runs that name none
  --image IMAGE             sandbox image (docker) for its runs, one the daemon allows
  --timeout DURATION        deadline for runs that give none, e.g. 30m, 2h
  --grant-git-tokens        give git host tokens among the secrets and variables (GITHUB_TOKEN,
                            GH_TOKEN, GITLAB_TOKEN…) to the sandbox too; by default only the
                            daemon has them (to push and open pull requests)
  --no-grant-git-tokens     keep them with the daemon again (env update)
  --setup-network MODE      network of the setup script: trusted (default), full or custom
  --repository REPO         runs of this environment may only use these repositories; repeatable
                            (on update: replaces the list; --any-repository clears it)
  --agent PRESET            the ACP agent its runs use by default: claude-code or codex
  --acp-command ARG         an ACP agent by its command, one argument per flag (repeatable)
  --agent-command ARG       a plain command agent, one argument per flag (repeatable;
                            an argument starting with "-" as --agent-command=-c)
  --no-agent                (update) forget the agent: runs use the daemon's default
  --mode MODE               ACP runs: background (end with the first turn) or interactive
  --permissions POLICY      ACP permission requests: auto_allow, ask or deny
  --idle-timeout DURATION   an interactive run waiting for a prompt this long is completed
  --warm-pool N             docker sandboxes kept started for its runs, per repository (0-8;
                            0: the daemon's --warm-pool); made at once for its --repository list`;

/** Sets on `e` what the flags of env create/update give; the rest stays as it is. */
function applyEnvFlags(e: Environment, values: Record<string, unknown>, io: CliIo): void {
  if (values.name !== undefined) e.name = String(values.name);
  if (values.network !== undefined) {
    const n = NETWORKS[String(values.network)];
    if (n === undefined) throw new UsageError(`--network: ${JSON.stringify(values.network)} is not one of ${Object.keys(NETWORKS).join(", ")}`);
    e.networkAccess = n;
  }
  if (values.allow !== undefined) e.allowedDomains = list(values.allow);
  if (values["include-trusted"]) e.includeTrusted = true;
  for (const kv of list(values.var)) {
    const eq = kv.indexOf("=");
    if (eq < 1) throw new UsageError("--var: expected K=V (a name, \"=\", then the value)");
    e.envVars[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  if (values["setup-script"] !== undefined) {
    const f = String(values["setup-script"]);
    try {
      e.setupScript = readFileSync(resolve(io.cwd, f), "utf8");
    } catch (error) {
      throw new UsageError(`--setup-script: cannot read ${f} (${(error as NodeJS.ErrnoException).code ?? "error"})`);
    }
  }
  if (values.provider !== undefined) e.defaultProvider = String(values.provider);
  if (values.image !== undefined) e.image = String(values.image);
  if (values.timeout !== undefined) e.timeout = durationFlag("timeout", values.timeout);
  if (values["grant-git-tokens"] && values["no-grant-git-tokens"]) throw new UsageError("--grant-git-tokens and --no-grant-git-tokens contradict each other");
  if (values["grant-git-tokens"]) e.grantGitTokens = true;
  if (values["no-grant-git-tokens"]) e.grantGitTokens = false;
  if (values["setup-network"] !== undefined) e.setupNetworkAccess = choice("setup-network", NETWORKS, values["setup-network"]);
  if (values.repository !== undefined) e.repositories = list(values.repository);
  if (values["any-repository"]) e.repositories = [];
  const agents = [values.agent !== undefined, values["acp-command"] !== undefined, values["agent-command"] !== undefined, !!values["no-agent"]].filter(Boolean).length;
  if (agents > 1) throw new UsageError("give one of --agent, --acp-command, --agent-command and --no-agent");
  if (values.agent !== undefined) e.agent = w.create(w.AgentSpecSchema, { kind: w.AgentKind.ACP, preset: String(values.agent) });
  if (values["acp-command"] !== undefined) e.agent = w.create(w.AgentSpecSchema, { kind: w.AgentKind.ACP, command: list(values["acp-command"]) });
  if (values["agent-command"] !== undefined) e.agent = w.create(w.AgentSpecSchema, { kind: w.AgentKind.COMMAND, command: list(values["agent-command"]) });
  if (values["no-agent"]) e.agent = undefined;
  if (values.mode !== undefined) e.mode = choice("mode", MODES, values.mode);
  if (values.permissions !== undefined) e.permissionPolicy = choice("permissions", POLICIES, values.permissions);
  if (values["idle-timeout"] !== undefined) e.idleTimeout = durationFlag("idle-timeout", values["idle-timeout"]);
  if (values["warm-pool"] !== undefined) {
    const n = String(values["warm-pool"]);
    if (!/^\d{1,4}$/.test(n)) throw new UsageError(`--warm-pool: ${JSON.stringify(n)} is not a number of sandboxes (0 or more)`);
    e.warmPool = Number(n);
  }
}

/** The secrets of --secret and --setup-only-secret, values from stdin or files only. */
async function secretInputs(values: Record<string, unknown>, io: CliIo): Promise<SecretInput[]> {
  const fail = (m: string) => new UsageError(m);
  const flags = [
    ...parseSecretFlags("secret", list(values.secret), fail).map((s) => ({ ...s, flag: "secret", setupOnly: false })),
    ...parseSecretFlags("setup-only-secret", list(values["setup-only-secret"]), fail).map((s) => ({ ...s, flag: "setup-only-secret", setupOnly: true })),
  ];
  const seen = new Set<string>();
  for (const f of flags) {
    if (seen.has(f.name)) throw new UsageError(`--${f.flag} ${f.name}: given twice`);
    seen.add(f.name);
  }
  const brokers = brokerFlags(list(values.broker), seen);
  if (flags.length === 0) return [];
  const fromStdin = flags.find((f) => f.file === undefined);
  if (fromStdin && (io.stdio?.input as { isTTY?: boolean } | undefined)?.isTTY) io.err(`paddock: type the value of ${fromStdin.name}, then Ctrl-D`);
  const read = await readSecretValues(flags, io.cwd, io.stdio?.input, fail);
  return flags.map((f) => w.create(w.SecretInputSchema, { name: f.name, value: read.get(f.name)!, setupOnly: f.setupOnly, broker: brokers.get(f.name) }));
}

/** --broker NAME,host=…,header=…[,template=…][,path=…] | NAME,host=…,basic=USER; checked in full by the daemon. */
function brokerFlags(given: string[], secrets: ReadonlySet<string>): Map<string, SecretBroker> {
  const out = new Map<string, SecretBroker>();
  const keys: Record<string, keyof Omit<SecretBroker, "$typeName" | "$unknown">> = { host: "host", header: "header", template: "template", path: "pathPrefix", basic: "basicUsername" };
  for (const g of given) {
    const [name = "", ...parts] = g.split(",");
    if (!secrets.has(name)) throw new UsageError(`--broker ${name}: give the secret with --secret ${name} in the same command (a broker is set with its value)`);
    const b = w.create(w.SecretBrokerSchema, {});
    for (const part of parts) {
      const eq = part.indexOf("=");
      const key = keys[part.slice(0, eq)];
      if (eq < 1 || !key) throw new UsageError(`--broker ${name}: expected host=, header=, template=, path= or basic=, not ${JSON.stringify(part)}`);
      b[key] = part.slice(eq + 1);
    }
    out.set(name, b);
  }
  return out;
}

function showEnvironment(e: Environment): string {
  const vars = Object.entries(e.envVars);
  return [
    `environment ${e.id} (${e.name}, team ${e.team})`,
    `  network:  ${networkName(e.networkAccess)}${e.networkAccess === w.NetworkAccess.CUSTOM ? `: ${[...e.allowedDomains, ...(e.includeTrusted ? ["(trusted list)"] : [])].join(", ") || "nothing"}` : ""}`,
    ...(vars.length ? [`  vars:     ${vars.map(([k, v]) => `${k}=${v}`).join(" ")}`] : []),
    ...(e.secrets.length ? [`  secrets:  ${e.secrets.map((s) => `${s.name}${s.setupOnly ? " (setup only)" : ""}${s.broker ? ` (brokered for ${s.broker.host}${s.broker.pathPrefix})` : ""}`).join(", ")}`] : []),
    ...(e.setupScript ? [`  setup:    ${e.setupScript.split("\n").filter(Boolean).length} line script`] : []),
    ...(e.defaultProvider || e.image ? [`  provider: ${e.defaultProvider || "(daemon's)"}  image: ${e.image || "(daemon's)"}`] : []),
    ...(e.timeout ? [`  timeout:  ${Number(e.timeout.seconds)}s`] : []),
    ...(e.grantGitTokens ? ["  git host tokens: given to its sandboxes (--grant-git-tokens)"] : []),
    ...(e.setupScript ? [`  setup network: ${networkName(e.setupNetworkAccess)}`] : []),
    ...(e.repositories.length ? [`  repositories: ${e.repositories.join(", ")}`] : []),
    ...(e.agent ? [`  agent:    ${e.agent.kind === w.AgentKind.ACP ? "ACP " : ""}${e.agent.preset || e.agent.command.join(" ")}`] : []),
    ...(e.mode || e.permissionPolicy ? [`  mode:     ${nameOf(MODES, e.mode) || "(default)"}  permissions: ${nameOf(POLICIES, e.permissionPolicy) || "(default)"}`] : []),
    ...(e.idleTimeout ? [`  idle timeout: ${Number(e.idleTimeout.seconds)}s`] : []),
    ...(e.warmPool ? [`  warm pool: ${e.warmPool} per repository`] : []),
    `  created:  ${when(e.createTime)}  updated: ${when(e.updateTime)}`,
  ].join("\n");
}

function showToken(t: Token): string {
  return [
    `token ${t.id} (${t.name}, team ${t.team})`,
    `  scopes:  ${t.scopes.join(", ")}`,
    `  created: ${when(t.createTime)}  last used: ${when(t.lastUsedTime)}${t.revokeTime ? `  revoked: ${when(t.revokeTime)}` : ""}`,
  ].join("\n");
}

const commands: Record<string, Command> = {
  "handoff pull": {
    usage: "paddock handoff pull RUN_ID [--dir DIR]",
    summary: "bring a run's branch, working tree and conversation into a local checkout",
    help: `  --dir DIR   the checkout (default: the current directory); it must be a clean checkout
             of the run's repository
A running run ends here and its state is taken; a finished run gives the state kept when
it was cleaned. The checkout lands on branch paddock/RUN_ID with the run's staged, unstaged
and untracked files as they were; the conversation (session files and manifest) goes to
<git dir>/paddock/handoff/RUN_ID.`,
    options: { dir: { type: "string" } },
    async run({ values, positionals, c, io, json: asJson }) {
      const runId = one(positionals, "run id");
      const { pullHandoff } = await import("./handoff.js");
      const r = await pullHandoff(c, runId, resolve(io.cwd, String(values.dir ?? ".")), io.env, io.signal);
      const m = r.manifest;
      if (asJson) {
        io.out(JSON.stringify({ runId, dir: r.top, branch: r.branch, head: m.headCommit, sessionId: m.acpSessionId, conversationDir: r.conversationDir, lastEventSeq: Number(m.lastEventSeq) }));
      } else {
        io.out(`run ${runId} handed off into ${r.top}, branch ${r.branch} at ${m.headCommit.slice(0, 12)} with its working tree`);
        if (m.acpSessionId) io.out(`conversation: session ${m.acpSessionId} (${m.sessionFiles.length} file(s), up to event ${m.lastEventSeq}) in ${r.conversationDir}`);
        io.out("send it back with: paddock handoff push");
      }
      return EXIT.ok;
    },
  },
  "handoff push": {
    usage: "paddock handoff push [--task TASK_ID] [--provider docker|local] [--prompt TEXT] [--interactive] [--dir DIR] [-- AGENT COMMAND...]",
    summary: "start a run from the local branch and working tree, carrying the conversation on",
    help: `  --task TASK_ID     the task (default: the one this branch was pulled from)
  --provider NAME    sandbox provider (default: the environment's or the daemon's)
  --prompt TEXT      the new run's first prompt (default: go on with the task; an
                     --interactive run waits for one)
  --interactive      an ACP run that stays for follow-up prompts
  --dir DIR          the checkout (default: the current directory)
  -- COMMAND...      the new run's agent command (default: the agent of the pulled run)
The checkout is not changed. After a pull on this branch the conversation goes with it: the
agent loads its session, or (an agent that cannot) is given the earlier turns as context.`,
    options: { task: { type: "string" }, provider: { type: "string" }, prompt: { type: "string" }, interactive: { type: "boolean" }, dir: { type: "string" } },
    async run({ values, positionals, c, io, json: asJson }) {
      const { pushHandoff } = await import("./handoff.js");
      const r = await pushHandoff(c, String(values.token ?? io.env.PADDOCK_TOKEN ?? "") || undefined, {
        dir: resolve(io.cwd, String(values.dir ?? ".")),
        taskId: String(values.task ?? ""),
        provider: String(values.provider ?? ""),
        prompt: String(values.prompt ?? ""),
        interactive: !!values.interactive,
        agentCommand: positionals,
        env: io.env,
        signal: io.signal,
      });
      if (asJson) io.out(json(w.TaskRunSchema, r.run));
      else {
        io.out(`run ${r.run.id} started from ${r.manifest.branch || "a detached HEAD"} at ${r.manifest.headCommit.slice(0, 12)} with its working tree (${r.uploadBytes} bytes)`);
        if (r.manifest.acpSessionId) io.out(`conversation: session ${r.manifest.acpSessionId} of run ${r.fromRun} goes on`);
      }
      return EXIT.ok;
    },
  },
  "task create": {
    usage: "paddock task create --title TITLE --repo REPOSITORY [--description TEXT | --description-file FILE] [--origin ORIGIN] [--environment ENV_ID]",
    summary: "create a task",
    help: `  --title TITLE            one line, required
  --repo REPOSITORY        owner/repo (on the daemon's git host), a git URL, or a local path
                           (relative paths are made absolute here)
  --description TEXT       what the agent should do; --description-file reads it from a file ("-" for stdin)
  --origin ORIGIN          where the task comes from (default "cli")
  --environment ENV_ID     the environment its runs use unless a run names another`,
    options: {
      title: { type: "string" },
      repo: { type: "string" },
      description: { type: "string" },
      "description-file": { type: "string" },
      origin: { type: "string" },
      environment: { type: "string" },
    },
    async run({ values, c, io, json: asJson }) {
      if (!values.title) throw new UsageError("--title is required");
      if (!values.repo) throw new UsageError("--repo is required");
      let description = String(values.description ?? "");
      if (values["description-file"]) {
        const f = String(values["description-file"]);
        description = readFileSync(f === "-" ? 0 : resolve(io.cwd, f), "utf8");
      }
      let repository = String(values.repo);
      if (repository.startsWith(".") || repository.startsWith("/") || repository === "~" || repository.startsWith("~/")) {
        repository = resolve(io.cwd, repository.replace(/^~(?=$|\/)/, io.env.HOME ?? "~"));
      }
      const { task } = await c.tasks.createTask(
        { title: String(values.title), description, repository, origin: String(values.origin ?? "cli"), environmentId: String(values.environment ?? "") },
        { signal: io.signal },
      );
      io.out(asJson ? json(w.TaskSchema, task!) : showTask(task!));
      return EXIT.ok;
    },
  },
  "task get": {
    usage: "paddock task get TASK_ID",
    summary: "show a task",
    help: "",
    options: {},
    async run({ positionals, c, io, json: asJson }) {
      const { task } = await c.tasks.getTask({ taskId: one(positionals, "task id") }, { signal: io.signal });
      io.out(asJson ? json(w.TaskSchema, task!) : showTask(task!));
      return EXIT.ok;
    },
  },
  "task list": {
    usage: "paddock task list [--limit N]",
    summary: "list tasks, newest first",
    help: "  --limit N   how many (default 50); follows pages as needed",
    options: { limit: { type: "string" } },
    async run({ values, c, io, json: asJson }) {
      const pages = paged(values.limit, async (pageSize, pageToken) => {
        const res = await c.tasks.listTasks({ pageSize, pageToken }, { signal: io.signal });
        return { items: res.tasks, next: res.nextPageToken };
      });
      for await (const t of pages) io.out(asJson ? json(w.TaskSchema, t) : `${t.id}  #${t.taskNumber}  ${t.title}  (${t.repository})`);
      return EXIT.ok;
    },
  },
  "run start": {
    usage: "paddock run start TASK_ID [--branch B] [--timeout 30m] [--provider local] [--agent claude-code|codex] [--acp] [--interactive] [--permissions ask] [--idempotency-key K] [--environment ENV_ID] [--priority N] [--follow] [-- AGENT COMMAND...]",
    summary: "start a run of a task",
    help: `  --branch B            branch to start from (default: the repository's default branch)
  --timeout DURATION    deadline from now, e.g. 90s, 30m, 2h (default: the daemon's, 60m)
  --provider NAME       sandbox provider (default: the daemon's, local)
  --idempotency-key K   a retried start with the same key returns the same run
  --environment ENV_ID  the environment for this run (default: the task's)
  --priority N          among your team's queued runs, higher starts first (-1000..1000, default 0)
  --agent PRESET        an ACP agent by name: claude-code (claude-code-acp) or codex (codex-acp)
  --acp                 the command after -- speaks the Agent Client Protocol over stdio
  --interactive         an ACP run that stays for follow-up prompts (paddock run prompt)
  --permissions POLICY  ACP permission requests: auto_allow (background default), ask
                        (interactive default; answer with paddock run permit), or deny
  --pr                  open a pull request from the run's branch when it completes
  -f, --follow          then stream its logs until it ends (exit code as for "logs -f")
  -- COMMAND...         the agent command for this run (default: the daemon's --agent-command)`,
    options: {
      branch: { type: "string" },
      timeout: { type: "string" },
      provider: { type: "string" },
      "idempotency-key": { type: "string" },
      follow: { type: "boolean", short: "f" },
      agent: { type: "string" },
      acp: { type: "boolean" },
      interactive: { type: "boolean" },
      permissions: { type: "string" },
      environment: { type: "string" },
      priority: { type: "string" },
      pr: { type: "boolean" },
    },
    async run({ values, positionals, c, io, json: asJson }) {
      const [taskId, ...agentCommand] = positionals;
      const priority = values.priority === undefined ? 0 : Number(values.priority);
      if (!Number.isInteger(priority)) throw new UsageError(`--priority: ${JSON.stringify(values.priority)} is not a whole number`);
      if (!taskId) throw new UsageError("expected a task id");
      const timeout = values.timeout === undefined ? undefined : durationFlag("timeout", values.timeout);
      const permissions = values.permissions === undefined ? w.PermissionPolicy.UNSPECIFIED : choice("permissions", POLICIES, values.permissions);
      const acp = !!values.acp || values.agent !== undefined;
      const { run } = await c.runs.startRun(
        {
          taskId,
          branch: String(values.branch ?? ""),
          agentCommand: acp ? [] : agentCommand,
          agent: acp ? { kind: w.AgentKind.ACP, preset: String(values.agent ?? ""), command: agentCommand } : undefined,
          mode: values.interactive ? w.RunMode.INTERACTIVE : w.RunMode.UNSPECIFIED,
          permissionPolicy: permissions,
          timeout,
          provider: String(values.provider ?? ""),
          idempotencyKey: String(values["idempotency-key"] ?? ""),
          environmentId: String(values.environment ?? ""),
          priority,
          openPullRequest: !!values.pr,
        },
        { signal: io.signal },
      );
      if (!values.follow) {
        io.out(asJson ? json(w.TaskRunSchema, run!) : showRun(run!));
        return EXIT.ok;
      }
      if (!asJson) io.err(`run ${run!.id} started; following its logs`);
      return followLogs(c, io, run!.id, 0n, asJson);
    },
  },
  "run get": {
    usage: "paddock run get RUN_ID",
    summary: "show a run",
    help: "",
    options: {},
    async run({ positionals, c, io, json: asJson }) {
      const { run } = await c.runs.getRun({ runId: one(positionals, "run id") }, { signal: io.signal });
      io.out(asJson ? json(w.TaskRunSchema, run!) : showRun(run!));
      return EXIT.ok;
    },
  },
  "run list": {
    usage: "paddock run list [--task TASK_ID] [--status STATUS] [--limit N]",
    summary: "list runs, newest first",
    help: "  --task TASK_ID   only this task's runs\n  --status STATUS  queued, in_progress, completed, failed or cancelled\n  --limit N        how many (default 50)",
    options: { task: { type: "string" }, status: { type: "string" }, limit: { type: "string" } },
    async run({ values, c, io, json: asJson }) {
      let status = w.RunStatus.UNSPECIFIED;
      if (values.status) {
        const s = w.RunStatus[String(values.status).toUpperCase() as keyof typeof w.RunStatus];
        if (s === undefined || s === w.RunStatus.UNSPECIFIED) throw new UsageError(`--status: ${values.status} is not one of queued, in_progress, completed, failed, cancelled`);
        status = s;
      }
      const pages = paged(values.limit, async (pageSize, pageToken) => {
        const res = await c.runs.listRuns({ taskId: String(values.task ?? ""), status, pageSize, pageToken }, { signal: io.signal });
        return { items: res.runs, next: res.nextPageToken };
      });
      for await (const r of pages) {
        io.out(asJson ? json(w.TaskRunSchema, r) : `${r.id}  ${statusName(r.status).padEnd(11)} ${r.phase.padEnd(12)} task ${r.taskId}  ${when(r.createTime)}`);
      }
      return EXIT.ok;
    },
  },
  "run pr": {
    usage: "paddock run pr RUN_ID [--title T] [--body B] [--base BRANCH] [--draft]",
    summary: "push a finished run's branch and open a pull request from it (or show the open one)",
    help: `  --title T       the title (default: the task's)
  --body B        the description (default: the task's description and the run's summary)
  --base BRANCH   the branch to merge into (default: the run's branch, else the repository's default)
  --draft         open it as a draft
The daemon pushes and opens it with its GitHub App (or the environment's GITHUB_TOKEN);
the sandbox never has the credential. Asking again returns the same pull request.`,
    options: { title: { type: "string" }, body: { type: "string" }, base: { type: "string" }, draft: { type: "boolean" } },
    async run({ values, positionals, c, io, json: asJson }) {
      const res = await c.runs.createPullRequest(
        { runId: one(positionals, "run id"), title: String(values.title ?? ""), body: String(values.body ?? ""), base: String(values.base ?? ""), draft: !!values.draft },
        { signal: io.signal },
      );
      io.out(asJson ? json(w.CreatePullRequestResponseSchema, res) : `pull request #${res.number} ${res.created ? "opened" : "already open"}: ${res.url}`);
      return EXIT.ok;
    },
  },
  "run cancel": {
    usage: "paddock run cancel RUN_ID",
    summary: "cancel a queued or in-progress run (its sandbox is cleaned up)",
    help: "",
    options: {},
    async run({ positionals, c, io, json: asJson }) {
      const { run } = await c.runs.cancelRun({ runId: one(positionals, "run id") }, { signal: io.signal });
      io.out(asJson ? json(w.TaskRunSchema, run!) : showRun(run!));
      return EXIT.ok;
    },
  },
  "run complete": {
    usage: "paddock run complete RUN_ID [--failed] [--message TEXT]",
    summary: "end a running run from outside, as completed (default) or failed",
    help: "  --failed         mark it failed instead of completed\n  --message TEXT   why (shown as the run's error)",
    options: { failed: { type: "boolean" }, message: { type: "string" } },
    async run({ values, positionals, c, io, json: asJson }) {
      const { run } = await c.runs.completeRun(
        { runId: one(positionals, "run id"), status: values.failed ? w.RunStatus.FAILED : w.RunStatus.COMPLETED, errorMessage: String(values.message ?? "") },
        { signal: io.signal },
      );
      io.out(asJson ? json(w.TaskRunSchema, run!) : showRun(run!));
      return EXIT.ok;
    },
  },
  acp: {
    usage: "paddock acp [--agent claude-code|codex] [--provider NAME] [-- ACP AGENT COMMAND...]",
    summary: "an ACP agent on stdio for editors (Zed): its sessions are paddock runs",
    help: `  --agent PRESET   the agent new sessions run: claude-code (default) or codex
  --provider NAME  sandbox provider for new sessions (default: the daemon's)
  -- COMMAND...    an ACP agent's argv for new sessions instead of a preset

In Zed: "agent_servers": {"paddock": {"command": "paddock", "args": ["acp"]}}
session/new + the first prompt start a run on the editor's folder; session/list lists the
team's ACP runs, session/load attaches to one (its history replayed, then live); prompts,
cancels and permission answers go to the run. Nothing but the protocol is written to stdout.`,
    options: { agent: { type: "string" }, provider: { type: "string" } },
    async run({ values, positionals, c, io }) {
      if (!io.stdio) throw new UsageError("paddock acp needs its standard input and output");
      const { runAcpBridge } = await import("./acp-bridge.js");
      await runAcpBridge({
        clients: c,
        agent: positionals.length > 0 ? { preset: "", command: positionals } : { preset: String(values.agent ?? "claude-code"), command: [] },
        provider: String(values.provider ?? ""),
        input: io.stdio.input,
        output: io.stdio.output,
        version: PADDOCK_VERSION,
        log: (l) => io.err(`paddock acp: ${l}`),
      });
      return EXIT.ok;
    },
  },
  "run prompt": {
    usage: "paddock run prompt RUN_ID TEXT [--idempotency-key K]",
    summary: "send a follow-up prompt to an interactive ACP run (queued behind its current turn)",
    help: "  --idempotency-key K   a retried prompt with the same key is sent once",
    options: { "idempotency-key": { type: "string" } },
    async run({ values, positionals, c, io, json: asJson }) {
      const [runId, ...words] = positionals;
      if (!runId || words.length === 0) throw new UsageError("expected a run id and the prompt's text");
      const { promptId } = await c.runs.sendPrompt({ runId, text: words.join(" "), idempotencyKey: String(values["idempotency-key"] ?? "") }, { signal: io.signal });
      io.out(asJson ? JSON.stringify({ promptId }) : `prompt ${promptId} queued`);
      return EXIT.ok;
    },
  },
  "run permit": {
    usage: "paddock run permit RUN_ID REQUEST_ID [OPTION_ID | --reject]",
    summary: "answer a permission request of an ACP run (policy ask); the first answer wins",
    help: "  OPTION_ID        the option to choose, as the request lists them (paddock events RUN_ID)\n  --reject         reject the request",
    options: { reject: { type: "boolean" } },
    async run({ values, positionals, c, io }) {
      const [runId, requestId, optionId] = positionals;
      if (!runId || !requestId || (!optionId && !values.reject)) throw new UsageError("expected a run id, a request id, and an option id or --reject");
      await c.runs.respondPermission({ runId, requestId, optionId: values.reject ? "" : optionId! }, { signal: io.signal });
      io.out(`request ${requestId}: ${values.reject ? "rejected" : optionId}`);
      return EXIT.ok;
    },
  },
  "run cancel-turn": {
    usage: "paddock run cancel-turn RUN_ID",
    summary: "stop an ACP run's current turn; the run goes on",
    help: "",
    options: {},
    async run({ positionals, c, io }) {
      await c.runs.cancelTurn({ runId: one(positionals, "run id") }, { signal: io.signal });
      io.out("turn cancelled");
      return EXIT.ok;
    },
  },
  events: {
    usage: "paddock events [-f] [--after-seq N] [--kind K]... RUN_ID",
    summary: "print a run's events (log lines, agent updates, prompts, permissions, turn ends)",
    help: "  -f, --follow     keep streaming until the run is over\n  --after-seq N    only events after sequence number N\n  --kind K         only this kind (log, agent_update, prompt, permission_request, permission_resolved, turn_ended); repeatable",
    options: { follow: { type: "boolean", short: "f" }, "after-seq": { type: "string" }, kind: { type: "string", multiple: true } },
    async run({ values, positionals, c, io, json: asJson }) {
      const runId = one(positionals, "run id");
      const kinds = (values.kind as unknown as string[] | undefined) ?? [];
      let seq = BigInt(String(values["after-seq"] ?? "0"));
      const follow = !!values.follow;
      const open = () => c.runs.streamEvents({ runId, afterSeq: seq, follow, kinds }, { signal: io.signal, timeoutMs: follow ? 0 : undefined });
      await resuming(io, follow, open, (res) => {
        for (const e of res.events) {
          io.out(asJson ? json(w.RunEventSchema, e) : showEvent(e));
          seq = e.seq;
        }
      });
      return EXIT.ok;
    },
  },
  logs: {
    usage: "paddock logs [-f] [--after-seq N] RUN_ID",
    summary: "print a run's log; -f follows it until the run ends",
    help: "  -f, --follow     keep streaming until the run is over; exit 0 if it COMPLETED, 1 otherwise\n  --after-seq N    only lines after sequence number N (resume where you stopped)",
    options: { follow: { type: "boolean", short: "f" }, "after-seq": { type: "string" } },
    async run({ values, positionals, c, io, json: asJson }) {
      const runId = one(positionals, "run id");
      const after = BigInt(String(values["after-seq"] ?? "0"));
      if (!values.follow) {
        for await (const l of wholeLines(c.runs.streamLogs({ runId, afterSeq: after, follow: false }, { signal: io.signal }))) {
          io.out(asJson ? json(w.LogEntrySchema, l) : showLog(l));
        }
        return EXIT.ok;
      }
      return followLogs(c, io, runId, after, asJson);
    },
  },
  "env create": {
    usage: "paddock env create --name NAME [--network trusted|full|custom] [--allow DOMAIN]... [--include-trusted] [--var K=V]... [--secret NAME[=@FILE]]... [--setup-only-secret NAME[=@FILE]]... [--broker NAME,host=H,...]... [--setup-script FILE] [--setup-network MODE] [--provider P] [--image I] [--timeout D] [--repository REPO]... [--agent PRESET | --acp-command ARG... | --agent-command ARG...] [--mode M] [--permissions P] [--idle-timeout D]",
    summary: "create an environment (network policy, variables, secrets) for your team's runs",
    help: ENV_HELP,
    options: ENV_OPTIONS,
    async run({ values, c, io, json: asJson }) {
      if (!values.name) throw new UsageError("--name is required");
      const environment = w.create(w.EnvironmentSchema, { networkAccess: w.NetworkAccess.TRUSTED });
      applyEnvFlags(environment, values, io);
      const secrets = await secretInputs(values, io);
      const res = await c.environments.createEnvironment({ environment, secrets }, { signal: io.signal });
      io.out(asJson ? json(w.EnvironmentSchema, res.environment!) : showEnvironment(res.environment!));
      return EXIT.ok;
    },
  },
  "env list": {
    usage: "paddock env list [--limit N]",
    summary: "list your team's environments",
    help: "  --limit N   how many (default 50)",
    options: { limit: { type: "string" } },
    async run({ values, c, io, json: asJson }) {
      const pages = paged(values.limit, async (pageSize, pageToken) => {
        const res = await c.environments.listEnvironments({ pageSize, pageToken }, { signal: io.signal });
        return { items: res.environments, next: res.nextPageToken };
      });
      for await (const e of pages) {
        io.out(asJson ? json(w.EnvironmentSchema, e) : `${e.id}  ${e.name}  network ${networkName(e.networkAccess)}  ${e.secrets.length} secret(s)  ${Object.keys(e.envVars).length} var(s)`);
      }
      return EXIT.ok;
    },
  },
  "env get": {
    usage: "paddock env get ENV_ID",
    summary: "show an environment (secrets by name only)",
    help: "",
    options: {},
    async run({ positionals, c, io, json: asJson }) {
      const { environment } = await c.environments.getEnvironment({ environmentId: one(positionals, "environment id") }, { signal: io.signal });
      io.out(asJson ? json(w.EnvironmentSchema, environment!) : showEnvironment(environment!));
      return EXIT.ok;
    },
  },
  "env update": {
    usage: "paddock env update ENV_ID [flags of env create]... [--unset-var K]... [--remove-secret NAME]... [--no-include-trusted] [--any-repository] [--no-agent]",
    summary: "change an environment: only the flags given change; secrets are set or removed by name",
    help: `${ENV_HELP}
  --unset-var K             remove a variable; repeatable
  --remove-secret NAME      remove a secret; repeatable
  --no-include-trusted      stop adding the trusted list to --network custom
  --allow replaces the whole domain list; --var and --secret add or replace one entry each.`,
    options: { ...ENV_OPTIONS, "unset-var": { type: "string", multiple: true }, "remove-secret": { type: "string", multiple: true }, "no-include-trusted": { type: "boolean" } },
    async run({ values, positionals, c, io, json: asJson }) {
      const environmentId = one(positionals, "environment id");
      if (values["include-trusted"] && values["no-include-trusted"]) throw new UsageError("--include-trusted and --no-include-trusted contradict each other");
      const setSecrets = await secretInputs(values, io);
      // UpdateEnvironment replaces every field, so start from what the daemon has.
      const { environment } = await c.environments.getEnvironment({ environmentId }, { signal: io.signal });
      applyEnvFlags(environment!, values, io);
      if (values["no-include-trusted"]) environment!.includeTrusted = false;
      for (const k of list(values["unset-var"])) {
        if (!(k in environment!.envVars)) throw new UsageError(`--unset-var ${k}: the environment has no variable ${k}`);
        delete environment!.envVars[k];
      }
      const res = await c.environments.updateEnvironment({ environment, setSecrets, removeSecrets: list(values["remove-secret"]) }, { signal: io.signal });
      io.out(asJson ? json(w.EnvironmentSchema, res.environment!) : showEnvironment(res.environment!));
      return EXIT.ok;
    },
  },
  "env delete": {
    usage: "paddock env delete ENV_ID",
    summary: "delete an environment and its secrets",
    help: "",
    options: {},
    async run({ positionals, c, io, json: asJson }) {
      const environmentId = one(positionals, "environment id");
      await c.environments.deleteEnvironment({ environmentId }, { signal: io.signal });
      io.out(asJson ? JSON.stringify({ environmentId, deleted: true }) : `environment ${environmentId} deleted`);
      return EXIT.ok;
    },
  },
  "token create": {
    usage: "paddock token create --team TEAM --name NAME --scope SCOPE [--scope SCOPE]...",
    summary: "create an API token; its secret is printed once",
    help: `  --team TEAM     the team it acts for (letters, digits, - and _)
  --name NAME     a label ("ci", "alice's laptop")
  --scope SCOPE   tasks:read, tasks:write, runs:read, runs:write, environments:write, admin
                  or instance:admin; repeatable, at least one`,
    options: { team: { type: "string" }, name: { type: "string" }, scope: { type: "string", multiple: true } },
    async run({ values, c, io, json: asJson }) {
      if (!values.team) throw new UsageError("--team is required");
      if (!values.name) throw new UsageError("--name is required");
      const scopes = list(values.scope);
      if (scopes.length === 0) throw new UsageError("--scope is required (repeatable)");
      const res = await c.tokens.createToken({ team: String(values.team), name: String(values.name), scopes }, { signal: io.signal });
      if (asJson) {
        io.out(json(w.CreateTokenResponseSchema, res));
      } else {
        io.out(`${showToken(res.token!)}\n  secret:  ${res.secret}`);
        io.err("paddock: the secret is shown only this once; store it now");
      }
      return EXIT.ok;
    },
  },
  "token list": {
    usage: "paddock token list [--team TEAM] [--limit N]",
    summary: "list API tokens, newest first (never their secrets)",
    help: "  --team TEAM   only this team's (default: every team's, which needs instance:admin)\n  --limit N     how many (default 50)",
    options: { team: { type: "string" }, limit: { type: "string" } },
    async run({ values, c, io, json: asJson }) {
      const pages = paged(values.limit, async (pageSize, pageToken) => {
        const res = await c.tokens.listTokens({ team: String(values.team ?? ""), pageSize, pageToken }, { signal: io.signal });
        return { items: res.tokens, next: res.nextPageToken };
      });
      for await (const t of pages) {
        io.out(asJson ? json(w.TokenSchema, t) : `${t.id}  ${t.team}  ${t.name}  ${t.scopes.join(",")}  created ${when(t.createTime)}${t.revokeTime ? `  revoked ${when(t.revokeTime)}` : ""}`);
      }
      return EXIT.ok;
    },
  },
  "token revoke": {
    usage: "paddock token revoke TOKEN_ID",
    summary: "revoke an API token; it is refused from then on",
    help: "",
    options: {},
    async run({ positionals, c, io, json: asJson }) {
      const { token } = await c.tokens.revokeToken({ tokenId: one(positionals, "token id") }, { signal: io.signal });
      io.out(asJson ? json(w.TokenSchema, token!) : showToken(token!));
      return EXIT.ok;
    },
  },
};

/** Whole log lines from StreamLogs: a line the daemon sent in pieces (continued) is joined. */
async function* wholeLines(responses: AsyncIterable<StreamLogsResponse>): AsyncGenerator<LogEntry> {
  let pieces: LogEntry[] = [];
  for await (const res of responses) {
    for (const l of res.entries) {
      // A piece whose line never went on (a lost connection mid-line) is dropped, never shown as the line.
      if (pieces.length > 0 && pieces[0]!.seq !== l.seq) pieces = [];
      if (l.continued) {
        pieces.push(l);
        continue;
      }
      if (pieces.length > 0) {
        l.text = pieces.map((p) => p.text).join("") + l.text;
        pieces = [];
      }
      yield l;
    }
  }
}

async function followLogs(c: Clients, io: CliIo, runId: string, after: bigint, asJson: boolean): Promise<number> {
  let seq = after;
  const open = () => wholeLines(c.runs.streamLogs({ runId, afterSeq: seq, follow: true }, { signal: io.signal, timeoutMs: 0 }));
  await resuming(io, true, open, (l) => {
    io.out(asJson ? json(w.LogEntrySchema, l) : showLog(l));
    seq = l.seq;
  });
  const { run } = await c.runs.getRun({ runId }, { signal: io.signal });
  if (!asJson) io.err(`run ${runId}: ${statusName(run!.status)}${run!.errorMessage ? ` (${run!.errorMessage})` : ""}`);
  return run!.status === w.RunStatus.COMPLETED ? EXIT.ok : EXIT.failed;
}

/** Longest wait between reconnect tries of a follow. */
const RECONNECT_MAX_DELAY_MS = 30_000;

/** The daemon went away (restart, crash) rather than refusing the request: worth trying again. */
function daemonGone(error: unknown): boolean {
  const ce = w.ConnectError.from(error);
  if (ce.code === w.Code.Unavailable) return true;
  // A daemon killed mid-message leaves the stream cut inside an envelope.
  if (ce.rawMessage === "protocol error: incomplete envelope") return true;
  for (let e: unknown = error; e; e = (e as { cause?: unknown }).cause) {
    const code = (e as { code?: unknown }).code;
    if (code === "ECONNREFUSED" || code === "ENOENT" || code === "ECONNRESET" || code === "EPIPE") return true;
  }
  return false;
}

/**
 * Runs a stream to its end; when following and the daemon goes away, opens it again
 * (open() resumes after the last item handled) with exponential back-off, up to
 * PADDOCK_RECONNECT_TIMEOUT (default 5m) without reaching it.
 */
async function resuming<T>(io: CliIo, follow: boolean, open: () => AsyncIterable<T>, handle: (item: T) => void): Promise<void> {
  const giveUpMs = parseDuration(io.env.PADDOCK_RECONNECT_TIMEOUT || "5m") ?? 300_000;
  let delay = 250;
  let since = 0;
  for (;;) {
    try {
      for await (const item of open()) {
        handle(item);
        delay = 250;
        since = 0;
      }
      return;
    } catch (error) {
      if (!follow || io.signal.aborted || !daemonGone(error)) throw error;
      since ||= Date.now();
      if (Date.now() - since + delay > giveUpMs) throw error;
      io.err(`paddock: lost the daemon (${w.ConnectError.from(error).rawMessage}); reconnecting in ${Math.ceil(delay / 1000)}s`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, delay);
        io.signal.addEventListener("abort", done, { once: true });
        function done() {
          clearTimeout(timer);
          io.signal.removeEventListener("abort", done);
          resolve();
        }
      });
      if (io.signal.aborted) throw error;
      delay = Math.min(delay * 2, RECONNECT_MAX_DELAY_MS);
    }
  }
}

export function clientHelp(): string {
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(16)} ${c.summary}`);
  return lines.join("\n");
}

/** Runs a client command; returns the exit code. Errors are printed, never thrown. */
export async function runClientCommand(argv: string[], io: CliIo): Promise<number> {
  const name = [`${argv[0]} ${argv[1]}`, String(argv[0])].find((n) => n in commands);
  const group = Object.entries(commands).filter(([n]) => n.startsWith(`${argv[0]} `));
  if (!name && group.length > 0 && (argv.length === 1 || argv[1] === "--help" || argv[1] === "-h")) {
    io.out(`usage: paddock ${argv[0]} <command> [flags]\n\n${group.map(([n, c]) => `  ${n.padEnd(16)} ${c.summary}`).join("\n")}\n\nRun "paddock ${argv[0]} <command> --help" for its flags.`);
    return argv.length === 1 ? EXIT.usage : EXIT.ok;
  }
  if (!name) {
    io.err(`paddock: unknown command "${argv.slice(0, 2).join(" ")}"; run "paddock --help"`);
    return EXIT.usage;
  }
  const cmd = commands[name]!;
  const rest = argv.slice(name.split(" ").length);
  try {
    const { values, positionals } = parseArgs({ args: rest, options: { ...common, ...cmd.options }, allowPositionals: true, strict: true });
    if (values.help) {
      io.out(`usage: ${cmd.usage}\n\n${cmd.summary}\n${cmd.help ? `\n${cmd.help}\n` : ""}\n${COMMON_HELP}`);
      return EXIT.ok;
    }
    await loadWire(SERVICES_OF_GROUP[String(argv[0])] ?? ALL_SERVICES);
    const c = w.connect(String(values.address ?? io.env.PADDOCK_ADDRESS ?? ""), io.defaultSocket, String(values.token ?? io.env.PADDOCK_TOKEN ?? "") || undefined, w);
    return await cmd.run({ values: values as Record<string, string | boolean | undefined>, positionals, c, io, json: !!values.json });
  } catch (error) {
    return await reportError(error, io, cmd.usage);
  }
}

/** node:util parseArgs rejects unknown flags with an ERR_PARSE_ARGS_* code. */
async function reportError(error: unknown, io: CliIo, usage: string): Promise<number> {
  if (error instanceof UsageError || isParseArgsError(error)) {
    io.err(`paddock: ${(error as Error).message}\nusage: ${usage}`);
    return EXIT.usage;
  }
  if (!w) await loadWire();
  const ce = w.ConnectError.from(error);
  io.err(`paddock: ${ce.code === w.Code.Unavailable ? "cannot reach the daemon: " : ""}${ce.rawMessage} [${w.Code[ce.code] ?? ce.code}]`);
  switch (ce.code) {
    case w.Code.InvalidArgument:
      return EXIT.usage;
    case w.Code.NotFound:
      return EXIT.notFound;
    case w.Code.FailedPrecondition:
      return EXIT.precondition;
    case w.Code.Unavailable:
      return EXIT.unavailable;
    default:
      return EXIT.failed;
  }
}

