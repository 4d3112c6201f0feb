import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, createReadStream, createWriteStream, existsSync, lchownSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { createSandboxTokenVerifier } from "../auth/sandbox-token.js";
import { redactor } from "../redaction.js";
// Type-only: the ACP SDK costs ~40 ms at start-up, and only ACP runs load it (below).
import type { AcpSession, RunnerRequestError } from "./acp-session.js";
import { asUser, killAllOf, type AgentUser } from "./agent-user.js";
import { EventLog, type NewEvent } from "./event-log.js";
import { BASES_FILE, checkout, isCheckedOut } from "./checkout.js";
import { captureHandoff, captureState, exportWork } from "./handoff-capture.js";
import { readLines } from "./output-lines.js";
import { announceReady } from "./ready-fd.js";
import { trustCaFile } from "./trust-ca.js";
import { agentConfigDirs, agentEnvironment, type RunnerSettings } from "./runner-env.js";
import {
  COLLECT_HEADER,
  COLLECT_PATH,
  type CollectManifest,
  EXPORT_BRANCH_HEADER,
  EXPORT_HEAD_HEADER,
  HANDOFF_HEADER,
  RUNNER_EVENTS_FILE,
  RUNNER_INFO_FILE,
  type RunnerHealth,
  type RunnerInfo,
  type HandoffStart,
  type HandoffState,
  type RunnerLogStream,
  type StartRequest,
} from "./runner-protocol.js";

async function readJson<T>(req: IncomingMessage): Promise<T> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > 8 * 1024 * 1024) throw new Error("request body too large");
    chunks.push(c as Buffer);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  return (text ? JSON.parse(text) : {}) as T;
}

export interface RunnerOptions {
  settings: RunnerSettings;
  /** The runner's own environment: the agent's is built from an allowlist of it. */
  env: Record<string, string | undefined>;
  log: (msg: string) => void;
  /** Called once the runner listens (a claimed pool runner answers its claim then). */
  onListening?: () => void;
}

/** Where POST /handoff keeps what it took, in the runner's state. */
const HANDOFF_BUNDLE = "handoff.bundle";
const HANDOFF_STATE = "handoff.json";

/** Output waiting to be written beyond which the agent's pipes are no longer read. */
const BACKLOG_BYTES = 4 * 1024 * 1024;
/** After the agent exits, how long output still held open by its children is read. */
const DRAIN_AFTER_EXIT_MS = 1000;

/**
 * `paddock agent`: runs the agent command in the sandbox as the agent's own user, records
 * every output line (redacted) as a numbered event in a file only the runner can read, and
 * serves health, events (resumable by seq), start, cancel, export and shutdown to the
 * daemon. Resolves when the runner has shut down.
 */
export async function runRunner(opts: RunnerOptions): Promise<void> {
  const s = opts.settings;
  const user: AgentUser = s.PADDOCK_AGENT_UID !== undefined ? { uid: s.PADDOCK_AGENT_UID, gid: s.PADDOCK_AGENT_GID! } : null;
  const verify = await createSandboxTokenVerifier(s.JWT_PUBLIC_KEY, s.PADDOCK_RUN_ID);
  mkdirSync(s.PADDOCK_STATE_DIR, { recursive: true, mode: 0o700 });
  chmodSync(s.PADDOCK_STATE_DIR, 0o700);
  prepareHome(s.PADDOCK_AGENT_HOME, user);
  const log = new EventLog(join(s.PADDOCK_STATE_DIR, RUNNER_EVENTS_FILE));
  let redact = (t: string) => t;
  let agent: ChildProcess | null = null;
  /** The ACP client of an agent of kind acp; null for a command. */
  let acp: AcpSession | null = null;
  let state: RunnerHealth["agent"] = log.lastExit ? "exited" : "starting";
  let exitCode: number | null = log.lastExit?.exitCode ?? null;
  let lastContact = Date.now();
  if (!log.lastExit && log.lastSeq > 0) {
    // Events but no exit: the sandbox died under a running agent. Never start it again.
    log.append({ kind: "log", stream: "stderr", text: "paddock: the runner restarted; the agent it was running is gone" });
    exitCode = 137;
    state = "exited";
    log.append({ kind: "exit", exitCode, signal: null, stage: "agent" });
  }
  // The log budget: lines past it are read (the agent is not blocked) but only counted.
  let keptBytes = 0;
  let keptLines = 0;
  const dropped = { lines: 0, bytes: 0 };
  const droppedUpdates = { count: 0, bytes: 0 };
  /** Whether an entry of `size` fits the budget; the first that does not says so in the log. */
  const withinBudget = (size: number) => {
    if (keptLines < s.PADDOCK_LOG_MAX_LINES && keptBytes + size <= s.PADDOCK_LOG_MAX_BYTES) {
      keptLines++;
      keptBytes += size;
      return true;
    }
    if (dropped.lines === 0 && droppedUpdates.count === 0) {
      log.append({ kind: "log", stream: "stderr", text: `paddock: the log budget (${s.PADDOCK_LOG_MAX_LINES} lines, ${s.PADDOCK_LOG_MAX_BYTES} bytes) is used up; further lines are dropped and counted` });
    }
    return false;
  };
  const record = (stream: RunnerLogStream, text: string) => {
    if (!withinBudget(text.length)) {
      dropped.lines++;
      dropped.bytes += Buffer.byteLength(text);
      return;
    }
    log.append({ kind: "log", stream, text: redact(text) });
  };
  /** The ACP session the agent's updates belong to: what a handoff carries. */
  let sessionId = "";
  /** An ACP session update counts against the same budget as log lines. */
  const recordUpdate = (e: Extract<NewEvent, { kind: "acp" }>) => {
    if (e.sessionId) sessionId = e.sessionId;
    const size = JSON.stringify(e.update).length;
    if (!withinBudget(size)) {
      droppedUpdates.count++;
      droppedUpdates.bytes += size;
      return;
    }
    log.append(e);
  };
  /** Before an exit is recorded: how much the budget dropped, exactly. */
  const noteDropped = () => {
    if (dropped.lines > 0) log.append({ kind: "log", stream: "stderr", text: `paddock: ${dropped.lines} lines (${dropped.bytes} bytes) were dropped past the log budget` });
    if (droppedUpdates.count > 0) log.append({ kind: "log", stream: "stderr", text: `paddock: ${droppedUpdates.count} agent updates (${droppedUpdates.bytes} bytes) were dropped past the log budget` });
    dropped.lines = 0;
    dropped.bytes = 0;
    droppedUpdates.count = 0;
    droppedUpdates.bytes = 0;
  };
  const handoffStart = s.PADDOCK_HANDOFF ? (JSON.parse(s.PADDOCK_HANDOFF) as HandoffStart) : null;
  if (s.PADDOCK_AGENT_KIND === "acp" && state === "starting") {
    const { AcpSession } = await import("./acp-session.js");
    acp = new AcpSession({
      workspace: s.PADDOCK_WORKDIR,
      user,
      mode: s.PADDOCK_RUN_MODE,
      policy: s.PADDOCK_PERMISSION_POLICY,
      permissionTimeoutMs: s.PADDOCK_PERMISSION_TIMEOUT_MS,
      graceMs: s.PADDOCK_GRACE_MS,
      append: (e) => log.append(e),
      update: recordUpdate,
      line: (text) => record("agent", text),
      redact: (text) => redact(text),
      ready: () => (log.backlog > BACKLOG_BYTES ? log.whenDrained() : null),
      resume: handoffStart?.sessionId ? { sessionId: handoffStart.sessionId } : null,
      handoffLine: (text) => log.append({ kind: "log", stream: "handoff", text }),
    });
    // An interactive run without a task starts idle, waiting for its first POST /prompt.
    if (s.PADDOCK_PROMPT || s.PADDOCK_RUN_MODE === "background") acp.promptTask(s.PADDOCK_PROMPT);
  }

  /** Ends every process the agent started: its user's, or its process group without one. */
  const killRest = async (child: ChildProcess | null) => {
    if (user) await killAllOf(user);
    else if (child?.pid) signalGroup(child.pid, "SIGKILL");
  };
  let stopping = false;
  /** Lets a run held after setup go on (POST /continue, or a cancel: then nothing starts). */
  let releaseHold: (() => void) | null = null;
  let stage: RunnerHealth["stage"];
  /** SIGTERM to the child's group, and after the grace period every process of the agent's. */
  const stopChild = async (child: ChildProcess) => {
    if (child.exitCode === null && child.signalCode === null) {
      const ended = new Promise<void>((r) => child.once("exit", () => r()));
      signalGroup(child.pid!, "SIGTERM");
      const timer = setTimeout(() => void killRest(child), s.PADDOCK_GRACE_MS);
      await ended;
      clearTimeout(timer);
    }
    await killRest(child);
  };
  const terminateAgent = async () => {
    stopping = true;
    releaseHold?.();
    if (state === "starting" || state === "ready") state = "exited"; // held and never started: nothing will start now
    // An ACP agent is asked first: its turn is cancelled, so it can keep its conversation.
    if (state === "running" && stage === "agent") await acp?.interrupt(s.PADDOCK_GRACE_MS);
    const child = agent;
    if (state === "running" && child) await stopChild(child);
    else await killRest(child);
  };

  /** Import mode: whether the pushed repository is checked out (after a restart, the marker says so). */
  let imported = s.PADDOCK_IMPORT !== "1" || isCheckedOut(s.PADDOCK_STATE_DIR, s.PADDOCK_RUN_ID);
  let importing: Promise<void> = Promise.resolve();

  const server = createServer((req, res) => {
    lastContact = Date.now();
    handle(req, res).catch((error: unknown) => {
      opts.log(`request failed: ${String(error)}`);
      if (!res.headersSent) send(res, 500, { error: redact((error as Error).message ?? "internal error") });
      else res.destroy();
    });
  });
  server.headersTimeout = 30_000;
  server.requestTimeout = 0; // long polls and exports take their time

  const send = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };

  let shutdown!: () => void;
  const stopped = new Promise<void>((r) => (shutdown = r));

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const auth = req.headers.authorization ?? "";
    const token = auth.startsWith("Bearer ") ? auth.slice(7) : "";
    if (!token || !(await verify(token))) return send(res, 401, { error: "unauthenticated" });
    const url = new URL(req.url ?? "/", "http://runner");
    if (req.method === "GET" && url.pathname === "/health") {
      const body: RunnerHealth = { runId: s.PADDOCK_RUN_ID, agent: state, stage, exitCode, lastSeq: log.lastSeq, agentKind: s.PADDOCK_AGENT_KIND, ...(acp && state !== "exited" ? acp.health() : {}) };
      return send(res, 200, body);
    }
    if (req.method === "GET" && url.pathname === "/events") {
      const after = Math.max(0, Number(url.searchParams.get("after_seq") ?? 0) || 0);
      const waitMs = Math.min(60_000, Math.max(0, Number(url.searchParams.get("wait_ms") ?? 0) || 0));
      if (log.lastSeq <= after && waitMs > 0) {
        const next = log.nextAppend();
        const timer = setTimeout(next.cancel, waitMs);
        req.once("close", next.cancel);
        await next.promise;
        clearTimeout(timer);
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(`{"events":${log.afterJson(after)}}`);
      return;
    }
    if (req.method === "POST" && url.pathname === "/import") return importSource(req, res);
    if (req.method === "POST" && url.pathname === "/start") {
      if (!imported) return send(res, 409, { error: "the repository has not been imported yet (POST /import first)" });
      startAgent(await readJson<StartRequest>(req));
      return send(res, 200, { ok: true, agent: state });
    }
    if (req.method === "POST" && (url.pathname === "/prompt" || url.pathname === "/permission" || url.pathname === "/cancel-turn")) {
      return acpRequest(url.pathname, req, res);
    }
    if (req.method === "POST" && url.pathname === "/continue") {
      releaseHold?.();
      return send(res, 200, { ok: true, agent: state });
    }
    if (req.method === "POST" && url.pathname === "/export") {
      // The agent must not write while its work is taken.
      await terminateAgent();
      const bundleFile = join(s.PADDOCK_STATE_DIR, "work.bundle");
      rmSync(bundleFile, { force: true });
      const work = await exportWork({ workdir: s.PADDOCK_WORKDIR, user, home: s.PADDOCK_AGENT_HOME, runId: s.PADDOCK_RUN_ID, bundleFile, bases: readBases() });
      res.writeHead(200, { "content-type": "application/octet-stream", [EXPORT_BRANCH_HEADER]: encodeURIComponent(work.branch), [EXPORT_HEAD_HEADER]: work.head });
      if (!work.bundled) return void res.end();
      createReadStream(bundleFile).pipe(res);
      return;
    }
    if (req.method === "POST" && url.pathname === COLLECT_PATH) return collect(url.searchParams.get("handoff") === "1", res);
    if (req.method === "POST" && url.pathname === "/handoff") {
      // The agent stops first: the state is taken once, consistently, and kept.
      await terminateAgent();
      const taken = await (handoff ??= takeHandoff());
      res.writeHead(200, { "content-type": "application/octet-stream", [HANDOFF_HEADER]: Buffer.from(JSON.stringify(taken)).toString("base64url") });
      createReadStream(join(s.PADDOCK_STATE_DIR, HANDOFF_BUNDLE)).pipe(res);
      return;
    }
    if (req.method === "POST" && url.pathname === "/cancel") {
      await terminateAgent();
      return send(res, 200, { ok: true });
    }
    if (req.method === "POST" && url.pathname === "/shutdown") {
      await terminateAgent();
      send(res, 200, { ok: true });
      shutdown();
      return;
    }
    send(res, 404, { error: "not found" });
  }

  /** The handoff state, taken once (after the agent stopped) and kept in the runner's state. */
  let handoff: Promise<HandoffState> | null = null;
  const handoffFile = join(s.PADDOCK_STATE_DIR, HANDOFF_STATE);
  const keptHandoff = (): HandoffState | null =>
    existsSync(handoffFile) && existsSync(join(s.PADDOCK_STATE_DIR, HANDOFF_BUNDLE)) ? (JSON.parse(readFileSync(handoffFile, "utf8")) as HandoffState) : null;
  const keepHandoff = (taken: Omit<HandoffState, "lastSeq">): HandoffState => {
    const full: HandoffState = { ...taken, lastSeq: log.lastSeq };
    writeFileSync(handoffFile + ".tmp", JSON.stringify(full), { mode: 0o600 });
    renameSync(handoffFile + ".tmp", handoffFile);
    return full;
  };
  async function takeHandoff(): Promise<HandoffState> {
    const kept = keptHandoff();
    if (kept) return kept;
    return keepHandoff(
      await captureHandoff({
        workdir: s.PADDOCK_WORKDIR,
        user,
        home: s.PADDOCK_AGENT_HOME,
        bundleFile: join(s.PADDOCK_STATE_DIR, HANDOFF_BUNDLE),
        bases: readBases(),
        sessionId: acp?.currentSessionId || sessionId,
      }),
    );
  }

  /** One capture at a time: a retried POST /collect waits for the one before it. */
  let collecting: Promise<unknown> = Promise.resolve();
  /**
   * POST /collect: the agent stops, then its work and (asked for, and not kept already)
   * its handoff state are taken in one pass; both bundles go back in one answer.
   */
  async function collect(withHandoff: boolean, res: ServerResponse) {
    await terminateAgent();
    const turn = collecting.then(async () => {
      const workBundle = join(s.PADDOCK_STATE_DIR, "work.bundle");
      rmSync(workBundle, { force: true });
      let state = withHandoff ? keptHandoff() : null;
      const captured = await captureState({
        workdir: s.PADDOCK_WORKDIR,
        user,
        home: s.PADDOCK_AGENT_HOME,
        bases: readBases(),
        work: { runId: s.PADDOCK_RUN_ID, bundleFile: workBundle },
        handoff: withHandoff && !state ? { bundleFile: join(s.PADDOCK_STATE_DIR, HANDOFF_BUNDLE), sessionId: acp?.currentSessionId || sessionId } : undefined,
      });
      if (captured.handoff) state = keepHandoff(captured.handoff);
      handoff = state ? Promise.resolve(state) : handoff;
      const size = (file: string) => statSync(file).size;
      const manifest: CollectManifest = {
        work: { branch: captured.work!.branch, head: captured.work!.head, bytes: captured.work!.bundled ? size(workBundle) : 0 },
        ...(state ? { handoff: { ...state, bytes: size(join(s.PADDOCK_STATE_DIR, HANDOFF_BUNDLE)) } } : {}),
        ...(captured.handoffError ? { handoffError: captured.handoffError } : {}),
      };
      return manifest;
    });
    collecting = turn.catch(() => undefined);
    const manifest = await turn;
    res.writeHead(200, { "content-type": "application/octet-stream", [COLLECT_HEADER]: Buffer.from(JSON.stringify(manifest)).toString("base64url") });
    const sendFile = async (file: string) => {
      for await (const chunk of createReadStream(file)) {
        if (res.destroyed) return; // the daemon went away: it asks again
        if (!res.write(chunk)) await Promise.race([once(res, "drain"), once(res, "close")]);
      }
    };
    if (manifest.work.bytes > 0) await sendFile(join(s.PADDOCK_STATE_DIR, "work.bundle"));
    if (manifest.handoff) await sendFile(join(s.PADDOCK_STATE_DIR, HANDOFF_BUNDLE));
    res.end();
  }
  function readBases(): string[] {
    const file = join(s.PADDOCK_STATE_DIR, BASES_FILE);
    return existsSync(file) ? readFileSync(file, "utf8").split("\n").filter((l) => /^[0-9a-f]{40,64}$/.test(l)) : [];
  }

  /**
   * The mirror of /export, for sandboxes with no mounts: the body is a git bundle of the
   * daemon's copy of the repository, cloned (or, in a snapshot's workspace, fetched) into
   * the workdir with hardened git. Once checked out for this run, later imports are no-ops.
   */
  async function importSource(req: IncomingMessage, res: ServerResponse) {
    if (s.PADDOCK_IMPORT !== "1") {
      req.resume();
      return send(res, 409, { error: "this runner takes its repository from PADDOCK_SOURCE" });
    }
    const previous = importing;
    let done!: () => void;
    importing = new Promise<void>((r) => (done = r));
    await previous;
    try {
      if (imported) {
        req.resume();
        return send(res, 200, { ok: true, already: true });
      }
      const bundle = join(s.PADDOCK_STATE_DIR, "source.bundle");
      await pipeline(req, createWriteStream(bundle, { mode: 0o600 }));
      try {
        await checkout({
          runId: s.PADDOCK_RUN_ID,
          source: bundle,
          workdir: s.PADDOCK_WORKDIR,
          stateDir: s.PADDOCK_STATE_DIR,
          branch: s.PADDOCK_BRANCH,
          resultBranch: s.PADDOCK_RESULT_BRANCH,
          user,
          home: s.PADDOCK_AGENT_HOME,
          log: opts.log,
        });
      } catch (error) {
        const why = ((error as { stderr?: string }).stderr || (error as Error).message).trim();
        return send(res, 400, { error: `checkout failed: ${why.slice(0, 1000)}` });
      } finally {
        rmSync(bundle, { force: true });
      }
      imported = true;
      return send(res, 200, { ok: true });
    } finally {
      done();
    }
  }

  /** The ACP endpoints: a follow-up prompt, an answer to a permission request, a turn's cancel. */
  async function acpRequest(path: string, req: IncomingMessage, res: ServerResponse) {
    let body: unknown;
    try {
      body = await readJson<unknown>(req);
    } catch {
      return send(res, 400, { error: "the body must be JSON" });
    }
    if (state === "exited") return send(res, 409, { error: "the agent has exited" });
    if (!acp) return send(res, 409, { error: "the agent does not speak ACP (PADDOCK_AGENT_KIND is command)" });
    try {
      if (path === "/prompt") return send(res, 200, { ok: true, ...acp.prompt(body) });
      if (path === "/permission") {
        acp.respond(body);
        return send(res, 200, { ok: true });
      }
      return send(res, 200, { ok: true, cancelled: acp.cancelTurn() });
    } catch (error) {
      // By name: the class lives in the lazily loaded ACP module.
      if ((error as Error).name === "RunnerRequestError") return send(res, (error as RunnerRequestError).status, { error: (error as Error).message });
      throw error;
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(s.PADDOCK_RUNNER_PORT, s.PADDOCK_RUNNER_HOST, resolve);
  });
  const port = (server.address() as AddressInfo).port;

  const writeInfo = () => {
    const info: RunnerInfo = { pid: process.pid, port, agentPid: agent?.pid ?? null };
    const path = join(s.PADDOCK_STATE_DIR, RUNNER_INFO_FILE);
    writeFileSync(path + ".tmp", JSON.stringify(info), { mode: 0o600 });
    renameSync(path + ".tmp", path);
  };

  /**
   * Runs one child to its end as the agent's user, every output line an event. The exit
   * ends it even when children it left behind hold its pipes: they get a moment to flush,
   * then the pipes are closed.
   */
  function runChild(argv: string[], env: Record<string, string>, stdin: string, streams: (s: "stdout" | "stderr") => RunnerLogStream) {
    const child = spawnChild(argv, env);
    child.stdin?.on("error", () => {}); // a child that never reads stdin closes it early
    child.stdin?.end(stdin);
    const outputsDone = Promise.all([lines(child.stdout, streams("stdout")), lines(child.stderr, streams("stderr"))]);
    return { child, exited: exitOf(child, argv[0]!, outputsDone) };
  }

  function spawnChild(argv: string[], env: Record<string, string>): ChildProcess {
    const [file, ...args] = argv;
    const child = spawn(file!, args, { cwd: s.PADDOCK_WORKDIR, env, stdio: ["pipe", "pipe", "pipe"], detached: true, ...asUser(user) });
    agent = child;
    writeInfo();
    return child;
  }

  function lines(src: Readable | null, stream: RunnerLogStream): Promise<unknown> {
    const ready = () => (log.backlog > BACKLOG_BYTES ? log.whenDrained() : null);
    return src ? readLines(src, (text) => record(stream, text), ready).catch(() => undefined) : Promise.resolve();
  }

  function exitOf(child: ChildProcess, file: string, outputsDone: Promise<unknown>) {
    return new Promise<{ exitCode: number; signal: NodeJS.Signals | null }>((resolve) => {
      child.once("error", (error) => {
        record("stderr", `paddock: could not start ${file}: ${error.message}`);
        resolve({ exitCode: 127, signal: null });
      });
      child.once("exit", (code, signal) => {
        const drained = Promise.race([outputsDone, sleep(DRAIN_AFTER_EXIT_MS)]);
        void drained.then(() => {
          child.stdout?.destroy();
          child.stderr?.destroy();
          return outputsDone;
        }).then(() => resolve({ exitCode: code ?? 128 + signalNumber(signal), signal }));
      });
    });
  }

  /** An ACP agent: stdin and stdout carry the protocol, stderr lines are logged as usual. */
  function runAcpAgent(session: AcpSession, env: Record<string, string>) {
    const child = spawnChild(s.PADDOCK_AGENT_COMMAND, env);
    const exited = exitOf(child, s.PADDOCK_AGENT_COMMAND[0]!, lines(child.stderr, "stderr"));
    return session.run(child, exited, () => stopChild(child));
  }

  /**
   * Starts the run once (later calls do nothing): the setup script, if any, with the
   * setup-only environment, then — if it succeeded — the agent without it.
   */
  function startAgent(start: StartRequest = {}) {
    if (state !== "starting") return;
    state = "running";
    redact = redactor(start.redact ?? []);
    if (start.handoffTranscript) acp?.giveTranscript(start.handoffTranscript);
    let caEnv: Record<string, string> = {};
    if (start.caFile) {
      try {
        caEnv = trustCaFile(start.caFile);
      } catch (error) {
        record("stderr", `paddock: the operator's CA certificates could not be added: ${(error as Error).message}`);
      }
    }
    const base = agentEnvironment(opts.env, s, { ...caEnv, ...start.env });
    void (async () => {
      if (start.setupScript) {
        stage = "setup";
        const setup = await runChild(["sh", "-c", start.setupScript], { ...base, ...start.setupEnv }, "", () => "setup").exited;
        if (setup.exitCode !== 0) {
          exitCode = setup.exitCode;
          state = "exited";
          await killRest(agent);
          noteDropped();
          log.append({ kind: "exit", exitCode, signal: setup.signal, stage: "setup" });
          return;
        }
      }
      if (start.holdAfterSetup && !stopping) {
        state = "ready";
        await new Promise<void>((resolve) => (releaseHold = resolve));
        releaseHold = null;
        if (state === "ready") state = "running";
      }
      if (stopping) return; // cancelled during setup or while held
      stage = "agent";
      const done: { exitCode: number; signal: string | null; reason?: string } = acp ? await runAcpAgent(acp, base) : await runChild(s.PADDOCK_AGENT_COMMAND, base, s.PADDOCK_PROMPT + "\n", (st) => st).exited;
      // Whatever the agent left running dies with it, before anyone hears it finished.
      await killRest(agent);
      exitCode = done.exitCode;
      state = "exited";
      noteDropped();
      log.append({ kind: "exit", exitCode, signal: done.signal, stage: "agent", ...(done.reason ? { reason: done.reason } : {}) });
    })();
  }
  if (s.PADDOCK_HOLD !== "1") startAgent();
  writeInfo();
  announceReady(s.PADDOCK_READY_FD, { pid: process.pid, port, agentPid: (agent as ChildProcess | null)?.pid ?? null });
  opts.log(`runner for ${s.PADDOCK_RUN_ID} listening on ${s.PADDOCK_RUNNER_HOST}:${port}`);
  opts.onListening?.();

  const idleCheck = Math.min(s.PADDOCK_IDLE_EXIT_MS, 60_000);
  const idle = setInterval(() => {
    if (state === "exited" && Date.now() - lastContact > s.PADDOCK_IDLE_EXIT_MS) {
      opts.log("agent ended and nobody collected its events; exiting");
      shutdown();
    }
  }, idleCheck);
  idle.unref();

  await stopped;
  clearInterval(idle);
  log.close();
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
}

/**
 * The agent's HOME and the agents' config dirs in it: made for it, owned by it, readable by
 * nobody else. What exists already is the agent's and is left alone (lchown: a symlink it
 * planted leads nowhere).
 */
function prepareHome(home: string, user: AgentUser): void {
  if (!existsSync(home)) mkdirSync(home, { recursive: true, mode: 0o700 });
  if (user) lchownSync(home, user.uid, user.gid);
  for (const dir of Object.values(agentConfigDirs(home))) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch {
      continue; // there already
    }
    if (user) lchownSync(dir, user.uid, user.gid);
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal); // the child leads its own process group
  } catch {
    /* already gone */
  }
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };
function signalNumber(signal: NodeJS.Signals | null): number {
  return signal ? (SIGNALS[signal] ?? 1) : 0;
}
