import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { createSandboxTokenVerifier } from "../auth/sandbox-token.js";
import { exportWork } from "./export-work.js";
import {
  MAX_EVENTS_PER_RESPONSE,
  RUNNER_EVENTS_FILE,
  RUNNER_INFO_FILE,
  type RunnerEvent,
  type RunnerHealth,
  type RunnerInfo,
  type RunnerLogStream,
  type StartRequest,
} from "./runner-protocol.js";


async function readJson<T>(req: IncomingMessage): Promise<T> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString("utf8");
  return (text ? JSON.parse(text) : {}) as T;
}

type NewEvent = RunnerEvent extends infer E ? (E extends RunnerEvent ? Omit<E, "seq" | "time"> : never) : never;

export interface RunnerOptions {
  runId: string;
  host: string;
  port: number;
  /** The checked-out repository; the agent's working directory. */
  workdir: string;
  /** Where the runner keeps its events file and runner.json. */
  stateDir: string;
  command: string[];
  prompt: string;
  publicKeyPem: string;
  /** Time between SIGTERM and SIGKILL when the agent is cancelled. */
  graceMs: number;
  /** Wait for POST /start before starting the agent (so the daemon can snapshot first). */
  hold: boolean;
  /** Exit this long after the agent ended if the daemon never collects (orphan guard). */
  idleExitMs: number;
  env: Record<string, string | undefined>;
  log: (msg: string) => void;
}

/**
 * `paddock agent`: runs the agent command in the sandbox, records every output line as a
 * numbered event in a file, and serves health, events (resumable by seq), cancel and
 * shutdown to the daemon. Resolves when the runner has shut down.
 */
export async function runRunner(opts: RunnerOptions): Promise<void> {
  const verify = await createSandboxTokenVerifier(opts.publicKeyPem, opts.runId);
  const eventsPath = join(opts.stateDir, RUNNER_EVENTS_FILE);
  const events: RunnerEvent[] = existsSync(eventsPath)
    ? readFileSync(eventsPath, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as RunnerEvent)
    : [];
  const waiters = new Set<() => void>();
  let agent: ChildProcess | null = null;
  let state: RunnerHealth["agent"] = events.some((e) => e.kind === "exit") ? "exited" : "starting";
  let exitCode: number | null = null;
  let lastContact = Date.now();

  const record = (e: NewEvent) => {
    const event = { ...e, seq: events.length + 1, time: Date.now() } as RunnerEvent;
    // One synchronous append per line: the file is the record of truth if we are killed.
    appendFileSync(eventsPath, JSON.stringify(event) + "\n");
    events.push(event);
    for (const w of waiters) w();
    waiters.clear();
  };

  const killAgent = (signal: NodeJS.Signals) => {
    if (agent?.pid && state === "running") {
      try {
        process.kill(-agent.pid, signal); // the agent leads its own process group
      } catch {
        /* already gone */
      }
    }
  };
  const terminateAgent = async () => {
    if (state === "starting") state = "exited"; // held and never started: nothing will start now
    const child = agent;
    if (state !== "running" || !child || child.exitCode !== null || child.signalCode !== null) return;
    killAgent("SIGTERM");
    const ended = new Promise<void>((r) => child.once("exit", () => r()));
    const timer = setTimeout(() => killAgent("SIGKILL"), opts.graceMs);
    await ended;
    clearTimeout(timer);
  };

  const server = createServer((req, res) => {
    lastContact = Date.now();
    handle(req, res).catch((error: unknown) => {
      opts.log(`request failed: ${String(error)}`);
      if (!res.headersSent) send(res, 500, { error: "internal error" });
    });
  });

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
      const body: RunnerHealth = { runId: opts.runId, agent: state, exitCode, lastSeq: events.length };
      return send(res, 200, body);
    }
    if (req.method === "GET" && url.pathname === "/events") {
      const after = Math.max(0, Number(url.searchParams.get("after_seq") ?? 0) || 0);
      const waitMs = Math.min(60_000, Math.max(0, Number(url.searchParams.get("wait_ms") ?? 0) || 0));
      if (events.length <= after && waitMs > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, waitMs);
          function done() {
            clearTimeout(timer);
            waiters.delete(done);
            resolve();
          }
          waiters.add(done);
          req.once("close", done);
        });
      }
      return send(res, 200, { events: events.slice(after, after + MAX_EVENTS_PER_RESPONSE) });
    }
    if (req.method === "POST" && url.pathname === "/start") {
      startAgent(await readJson<StartRequest>(req));
      return send(res, 200, { ok: true, agent: state });
    }
    if (req.method === "POST" && url.pathname === "/export") {
      // The agent must not write while its work is taken.
      await terminateAgent();
      const work = exportWork(opts.workdir, opts.runId);
      res.writeHead(200, { "content-type": "application/octet-stream", "x-paddock-branch": work.branch, "x-paddock-head": work.head });
      res.end(work.bundle ?? Buffer.alloc(0));
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

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, resolve);
  });
  const port = (server.address() as AddressInfo).port;

  const writeInfo = () => {
    const info: RunnerInfo = { pid: process.pid, port, agentPid: agent?.pid ?? null };
    const path = join(opts.stateDir, RUNNER_INFO_FILE);
    writeFileSync(path + ".tmp", JSON.stringify(info));
    renameSync(path + ".tmp", path);
  };

  /** Runs one child to its end, every output line an event; `agent` is whatever runs now. */
  function runChild(argv: string[], env: Record<string, string | undefined>, stdin: string, streams: (s: "stdout" | "stderr") => RunnerLogStream) {
    const [file, ...args] = argv;
    const child = spawn(file!, args, { cwd: opts.workdir, env, stdio: ["pipe", "pipe", "pipe"], detached: true });
    agent = child;
    writeInfo();
    child.stdin?.on("error", () => {}); // a child that never reads stdin closes it early
    child.stdin?.end(stdin);
    const lines = (stream: "stdout" | "stderr", src: NodeJS.ReadableStream | null) => {
      if (!src) return Promise.resolve();
      const rl = createInterface({ input: src, crlfDelay: Infinity });
      rl.on("line", (text) => record({ kind: "log", stream: streams(stream), text }));
      return new Promise<void>((r) => rl.once("close", () => r()));
    };
    const outputsDone = Promise.all([lines("stdout", child.stdout), lines("stderr", child.stderr)]);
    return new Promise<{ exitCode: number; signal: NodeJS.Signals | null }>((resolve) => {
      child.once("error", (error) => {
        record({ kind: "log", stream: "stderr", text: `paddock: could not start ${file}: ${error.message}` });
        resolve({ exitCode: 127, signal: null });
      });
      child.once("exit", (code, signal) => {
        // Every line before the exit event.
        void outputsDone.then(() => resolve({ exitCode: code ?? 128 + signalNumber(signal), signal }));
      });
    });
  }

  /**
   * Starts the run once (later calls do nothing): the setup script, if any, with the
   * setup-only environment, then — if it succeeded — the agent without it.
   */
  function startAgent(start: StartRequest = {}) {
    if (state !== "starting") return;
    state = "running";
    const base = { ...opts.env, ...start.env, PADDOCK_RUN_ID: opts.runId, PADDOCK_PROMPT: opts.prompt };
    void (async () => {
      if (start.setupScript) {
        const setup = await runChild(["sh", "-c", start.setupScript], { ...base, ...start.setupEnv }, "", () => "setup");
        if (setup.exitCode !== 0) {
          exitCode = setup.exitCode;
          state = "exited";
          record({ kind: "exit", exitCode, signal: setup.signal, stage: "setup" });
          return;
        }
      }
      if (state !== "running") return; // cancelled during setup
      if (!opts.command[0]) throw new Error("runner: empty agent command");
      const done = await runChild(opts.command, base, opts.prompt + "\n", (s) => s);
      exitCode = done.exitCode;
      state = "exited";
      record({ kind: "exit", exitCode, signal: done.signal, stage: "agent" });
    })();
  }
  if (!opts.hold) startAgent();
  writeInfo();
  opts.log(`runner for ${opts.runId} listening on ${opts.host}:${port}`);

  const idle = setInterval(() => {
    if (state === "exited" && Date.now() - lastContact > opts.idleExitMs) {
      opts.log("agent ended and nobody collected its events; exiting");
      shutdown();
    }
  }, Math.min(opts.idleExitMs, 60_000));
  idle.unref();

  await stopped;
  clearInterval(idle);
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };
function signalNumber(signal: NodeJS.Signals | null): number {
  return signal ? (SIGNALS[signal] ?? 1) : 0;
}
