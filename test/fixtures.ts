import { ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import Database from "better-sqlite3";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import Docker from "dockerode";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { bearer } from "../src/cli/client.js";
import { runClientCommand } from "../src/cli/commands.js";
import { Readable, Writable } from "node:stream";
import { removeEgressNetwork } from "../src/sandbox/docker/egress-network.js";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import pino from "pino";
import { afterAll, test as base } from "vitest";
import { createApp, runnerCommand, type App } from "../src/app.js";
import type { Listener } from "../src/api/listener.js";
import { loadConfig, type ConfigInput } from "../src/config.js";
import { TaskService } from "../src/gen/paddock/v1/task_pb.js";
import { RunStatus, TaskRunService, type TaskRun } from "../src/gen/paddock/v1/task_run_pb.js";

const tempDirs: string[] = [];
// Registered as the file is collected, so it runs after the file's own afterAll hooks (which stop daemons first).
afterAll(() => {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A fresh directory under /tmp, removed when the test file ends. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `paddock-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

export const gitEnv = { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@example.test", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@example.test" };

export function sh(cwd: string, ...args: string[]): string {
  return execFileSync(args[0]!, args.slice(1), { cwd, env: gitEnv, encoding: "utf8" }).trim();
}

/** A real git repository with a commit on main and a branch "feature". */
export function makeGitRepo(): string {
  const dir = tempDir("repo");
  sh(dir, "git", "init", "--quiet", "-b", "main");
  writeFileSync(join(dir, "README.md"), "hello\n");
  sh(dir, "git", "add", ".");
  sh(dir, "git", "commit", "--quiet", "-m", "initial");
  sh(dir, "git", "branch", "feature");
  return dir;
}

export { bearer };

export interface Daemon {
  app: App;
  listener: Listener;
  url: string;
  dataDir: string;
  /** The admin token the daemon wrote on first start (team "default"). */
  adminToken: string;
  tasks: Client<typeof TaskService>;
  runs: Client<typeof TaskRunService>;
  grpcRuns: Client<typeof TaskRunService>;
  logs: string[];
  /** Starts another daemon on the same data dir (after stop()), as a restart would. */
  restart(): Promise<Daemon>;
}

export async function startDaemon(opts: { dataDir?: string; config?: ConfigInput; env?: Record<string, string> } = {}): Promise<Daemon> {
  const dataDir = opts.dataDir ?? tempDir("data");
  const logs: string[] = [];
  const logger = pino({ level: "debug" }, { write: (l: string) => void logs.push(l) });
  // PADDOCK_TEST_IMAGE: the docker tests run against an image built under another tag.
  const config = loadConfig({}, { dataDir, socket: join(dataDir, "p.sock"), listen: "127.0.0.1:0", dockerImage: process.env.PADDOCK_TEST_IMAGE || undefined, ...opts.config });
  const app = await createApp({ config, logger, runnerCommand: runnerCommand(), baseEnv: { ...gitEnv, ...opts.env }, pollWaitMs: 1_000 });
  const listener = await app.start();
  const tls = typeof opts.config?.tlsCert === "string" ? { ca: readFileSync(opts.config.tlsCert) } : undefined;
  const url = `${tls ? "https" : "http"}://127.0.0.1:${listener.port}`;
  const adminToken = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
  const interceptors = [bearer(adminToken)];
  const connect = createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors, nodeOptions: tls });
  const grpc = createGrpcTransport({ baseUrl: url, interceptors, nodeOptions: tls });
  return {
    app,
    listener,
    url,
    dataDir,
    adminToken,
    logs,
    tasks: createClient(TaskService, connect),
    runs: createClient(TaskRunService, connect),
    grpcRuns: createClient(TaskRunService, grpc),
    restart: () => startDaemon({ ...opts, dataDir }),
  };
}

/** Waits until the run is cleaned (WatchRun ends) and returns every state it was seen in. */
export async function watchToEnd(d: Pick<Daemon, "runs">, runId: string, timeoutMs = 60_000): Promise<TaskRun[]> {
  const seen: TaskRun[] = [];
  for await (const res of d.runs.watchRun({ runId }, { timeoutMs })) seen.push(res.run!);
  return seen;
}

export async function waitForPhase(d: Daemon, runId: string, phase: string, timeoutMs = 30_000): Promise<TaskRun> {
  for await (const res of d.runs.watchRun({ runId }, { timeoutMs })) if (res.run!.phase === phase) return res.run!;
  throw new Error(`run ${runId} ended without reaching ${phase}`);
}

export async function allLogs(d: Pick<Daemon, "runs">, runId: string, afterSeq = 0n) {
  const out = [];
  for await (const res of d.runs.streamLogs({ runId, afterSeq, follow: false })) out.push(...res.entries);
  return out;
}

/** A daemon and a repository per test; every run is cleaned and everything removed after. */
export const test = base.extend<{ daemon: Daemon; repo: string }>({
  repo: async ({}, use) => {
    const dir = makeGitRepo();
    await use(dir);
    rmSync(dir, { recursive: true, force: true });
  },
  daemon: async ({}, use) => {
    const d = await startDaemon();
    await use(d);
    await cleanUp(d);
  },
});

export async function cleanUp(d: Daemon): Promise<void> {
  const { runs } = await d.runs.listRuns({ pageSize: 1000 });
  for (const r of runs) {
    if (r.phase === "cleaned") continue;
    if (r.status === RunStatus.QUEUED || r.status === RunStatus.IN_PROGRESS) await d.runs.cancelRun({ runId: r.id }).catch(() => undefined);
    await watchToEnd(d, r.id);
  }
  await d.app.stop();
  removeSnapshots(d.dataDir);
  await removeEgress(d.dataDir);
  removeLocalWork(d.dataDir);
  rmSync(d.dataDir, { recursive: true, force: true });
}

/**
 * The sandbox image of this checkout's runner (with dist/paddock, built first if missing),
 * unless PADDOCK_TEST_IMAGE names one built already under its own tag.
 */
export function buildSandboxImage(): void {
  if (process.env.PADDOCK_TEST_IMAGE) return;
  const root = resolve(import.meta.dirname, "..");
  if (!existsSync(join(root, "dist", "paddock"))) execFileSync("npm", ["run", "--silent", "build"], { cwd: root, stdio: "inherit" });
  execFileSync("bash", ["scripts/build-images.sh"], { cwd: root, stdio: "inherit" });
}

/** Removes a test daemon's egress network and firewall chain, if it made them. */
export async function removeEgress(dataDir: string): Promise<void> {
  const instance = instanceOf(dataDir);
  if (instance && existsSync("/var/run/docker.sock")) await removeEgressNetwork(new Docker(), instance);
}

/** Removes the (empty, by now) tree where a root daemon's local agents had their workspaces. */
export function removeLocalWork(dataDir: string): void {
  const instance = instanceOf(dataDir);
  if (instance) rmSync(join("/var/lib/paddock-work", instance), { recursive: true, force: true });
}

/** A test daemon's instance id, from its database. */
export function instanceOf(dataDir: string): string {
  const db = new Database(join(dataDir, "paddock.db"), { readonly: true, fileMustExist: true });
  const row = db.prepare("SELECT value FROM meta WHERE key = 'instance_id'").get() as { value: string } | undefined;
  db.close();
  return row?.value ?? "";
}

/** Removes the snapshot images a test daemon took (they outlive it in the Docker engine), by row and by label. */
export function removeSnapshots(dataDir: string): void {
  const db = new Database(join(dataDir, "paddock.db"), { readonly: true, fileMustExist: true });
  const images = (db.prepare("SELECT external_id AS image FROM sandbox_snapshots WHERE external_id <> ''").all() as { image: string }[]).map((r) => r.image);
  const instance = (db.prepare("SELECT value FROM meta WHERE key = 'instance_id'").get() as { value: string } | undefined)?.value;
  db.close();
  if (instance && existsSync("/var/run/docker.sock")) {
    const labelled = execFileSync("docker", ["images", "-q", "--filter", `label=paddock.instance=${instance}`], { encoding: "utf8" }).split("\n").filter(Boolean);
    images.push(...new Set(labelled));
  }
  try {
    if (images.length > 0) execFileSync("docker", ["rmi", "-f", ...new Set(images)], { stdio: "ignore" });
  } catch {
    /* some were gone already (a test removed them); the rest are removed */
  }
}

/**
 * Whether a Docker engine answers. Under CI=true its absence is an error, never a skip:
 * the Docker tests must run there.
 */
export function dockerAvailable(): boolean {
  try {
    execFileSync("docker", ["info"], { stdio: "ignore" });
    return true;
  } catch {
    if (process.env.CI === "true") throw new Error("CI=true and no Docker engine: the Docker tests must run in CI");
    return false;
  }
}

/**
 * A compiled daemon (`bin serve`) on `dataDir` and `port`, for tests that kill it: resolves
 * once it listens; throws with its stderr when it exits first or does not listen within a
 * minute. `log` gets its log (JSON lines on stdout) and stderr as they come.
 */
export async function serveCompiled(bin: string, o: { dataDir: string; port: number; env: NodeJS.ProcessEnv; args?: string[]; log?: (chunk: string) => void }): Promise<ChildProcess> {
  const child = spawn(bin, ["serve", "--data-dir", o.dataDir, "--listen", `127.0.0.1:${o.port}`, "--log-format", "json", "--grace-time", "1s", ...(o.args ?? [])], { env: o.env, stdio: ["ignore", o.log ? "pipe" : "ignore", "pipe"] });
  child.stdout?.on("data", (b: Buffer) => o.log?.(b.toString()));
  let err = "";
  child.stderr!.on("data", (b: Buffer) => {
    err += b;
    o.log?.(b.toString());
  });
  for (let i = 0; i < 1200 && !err.includes("paddock listening") && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
  if (!err.includes("paddock listening")) {
    child.kill("SIGKILL");
    throw new Error(`daemon did not start: ${err}`);
  }
  return child;
}

/** Kills a compiled daemon with SIGKILL and resolves once it is gone. */
export async function killHard(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode) return;
  const gone = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await gone;
}

/** Task and run clients of the compiled daemon on `port`, with its data dir's admin token. */
export function compiledClients(dataDir: string, port: number) {
  const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
  const transport = createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1", interceptors: [bearer(token)] });
  return { tasks: createClient(TaskService, transport), runs: createClient(TaskRunService, transport) };
}

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Pids of the processes whose command line holds `text` (on the host or in containers). */
export function processesNaming(text: string): string[] {
  return readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, "latin1").includes(text);
      } catch {
        return false;
      }
    });
}

/** Processes (on the host or in containers) that carry a run's id in their environment. */
export function processesOf(runIds: string[]): string[] {
  const found: string[] = [];
  for (const p of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const env = readFileSync(`/proc/${p}/environ`, "latin1").split("\0");
      for (const id of runIds) {
        if (env.includes(`PADDOCK_RUN_ID=${id}`)) found.push(`${p} (${id}): ${readFileSync(`/proc/${p}/cmdline`, "latin1").split("\0").join(" ").trim()}`);
      }
    } catch {
      /* gone, or not readable */
    }
  }
  return found;
}

/** The ConnectError a call failed with; fails the test when it succeeds. */
export async function failureOf(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected the call to fail");
}

/**
 * Starts `paddock serve` as its own process (argv: the binary, or node + tsx + main.ts) and
 * resolves once it says it listens; rejects with its stderr if it exits first.
 */
export function spawnServe(argv: string[], args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<ChildProcess> {
  const child = spawn(argv[0]!, [...argv.slice(1), "serve", ...args], { cwd: opts.cwd, env: opts.env ?? gitEnv, stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolveStart, reject) => {
    let err = "";
    child.stderr!.on("data", (d: Buffer) => {
      err += d;
      if (err.includes("paddock listening")) resolveStart(child);
    });
    child.stdout!.resume();
    child.once("exit", (code) => reject(new Error(`paddock serve exited with ${code}: ${err}`)));
  });
}

/** The CLI in process against the daemon's TCP address: its exit code, stdout and stderr. */
export async function cliIn(d: Daemon, argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runClientCommand([...argv, "--address", d.url], {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    env: { PADDOCK_TOKEN: d.adminToken },
    cwd: "/",
    defaultSocket: "/nonexistent/paddock.sock",
    signal: new AbortController().signal,
    stdio: { input: Readable.from([]), output: new Writable({ write: (_c, _e, cb) => cb() }) },
  });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/** Whether a process with this pid exists (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
