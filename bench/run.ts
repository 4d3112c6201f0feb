/**
 * paddock benchmarks. Each figure is printed next to a baseline measured in the same
 * process (or script) on the same machine, as a ratio; medians of several rounds.
 *
 *   npm run bench               all three
 *   npm run bench -- transitions|replay|rss|auth|proxy|broker|docker|pool|modal|flood|events|startup|restore|web|metrics|queued|local|modules
 */
import { createClient } from "@connectrpc/connect";
import { bearer } from "../src/cli/client.js";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { execSync, spawn } from "node:child_process";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pino from "pino";
import { createApp, runnerCommand } from "../src/app.js";
import { issueSandboxToken, loadOrCreateSandboxKeys } from "../src/auth/sandbox-token.js";
import { dockerLimits, loadConfig } from "../src/config.js";
import { TaskRunService } from "../src/gen/paddock/v1/task_run_pb.js";
import { RunManager } from "../src/runs/run-manager.js";
import type { SandboxProvider } from "../src/sandbox/provider.js";
import type { DockerProvider } from "../src/sandbox/docker/docker-provider.js";
import { hostPart } from "../src/sandbox/docker/container-spec.js";
import { removeEgressNetwork } from "../src/sandbox/docker/egress-network.js";
import { openDatabase } from "../src/store/open-database.js";
import { createRunsRepository } from "../src/store/runs-repository.js";
import { createTasksRepository } from "../src/store/tasks-repository.js";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const tmp = (p: string) => mkdtempSync(join(tmpdir(), `paddock-bench-${p}-`));
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;
/** The binary under test: dist/paddock, or BENCH_BIN (e.g. an older build, for a before/after). */
const distBinary = () => process.env.BENCH_BIN || resolve(import.meta.dirname, "..", "dist", "paddock");

/**
 * A provider whose sandbox is created at once and is gone when supervised: every run walks
 * queued → provisioning → running → failed → cleaned with no process or git work, so the
 * figure is the cost of RunManager + XState + persistence alone.
 */
let instantRunnerEndpoint = "";
const instantProvider: SandboxProvider = {
  name: "bench",
  enforcesNetworkPolicy: false,
  isolatesAgents: false,
  provision: async () => ({ state: "running", endpoint: instantRunnerEndpoint }),
  inspect: async () => ({ state: "stopped" }),
  destroy: async () => ({}),
  list: async () => [],
};

async function transitionsRound(runsPerRound: number): Promise<{ managed: number; raw: number; managedCpu: number; rawCpu: number }> {
  const dir = tmp("tr");
  try {
    const db = await openDatabase(join(dir, "m.db"));
    const tasks = createTasksRepository(db);
    const repo = createRunsRepository(db);
    // What the manager writes, kept (by reference: nothing is copied on its path) so that the
    // baseline below writes exactly the same rows.
    const created: Parameters<typeof repo.create>[0][] = [];
    const written: Parameters<typeof repo.transition>[] = [];
    const counted = {
      ...repo,
      create: (...a: Parameters<typeof repo.create>) => (created.push(a[0]), repo.create(...a)),
      transition: (...a: Parameters<typeof repo.transition>) => (written.push(a), repo.transition(...a)),
    };
    // Every run's "runner" answers POST /start at once — from its own process, as real
    // runners do, so only the daemon's side of the handshake is measured here.
    const fakeRunner = spawn(process.execPath, ["-e", "const s = require('node:http').createServer((q, r) => { q.resume(); r.end('{}'); }); s.listen(0, '127.0.0.1', () => console.log(s.address().port));"], { stdio: ["ignore", "pipe", "inherit"] });
    const fakePort = await new Promise<string>((r) => fakeRunner.stdout!.once("data", (d: Buffer) => r(d.toString().trim())));
    instantRunnerEndpoint = `http://127.0.0.1:${fakePort}`;
    const manager = new RunManager({
      tasks,
      environments: { get: () => undefined, secretValues: () => [] },
      runs: counted,
      providers: new Map([["bench", instantProvider]]),
      keys: await loadOrCreateSandboxKeys(dir),
      logger: pino({ level: "silent" }),
      settings: { defaultAgentCommand: ["true"], defaultTimeoutMs: 3_600_000, defaultProvider: "bench", maxConcurrentRuns: 100_000, pollWaitMs: 1000, logBudget: { maxBytes: 1024 ** 3, maxLines: 10_000_000 }, reapIntervalMs: 3_600_000, sandboxImages: [] },
    });
    tasks.create({ team: "default", environmentId: "", id: "task_b", title: "b", description: "", repository: "/r", repositoryUrl: "/r", origin: "bench", createdAt: 0 });
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const ids = [];
    for (let i = 0; i < runsPerRound; i++) ids.push(manager.start({ team: "default", taskId: "task_b", branch: "", agentCommand: [], timeoutMs: null, provider: "", idempotencyKey: "", limits: {}, environmentId: "" }).id);
    await Promise.all(ids.map((id) => manager.waitForCleaned(id, AbortSignal.timeout(120_000))));
    const managedSecs = (performance.now() - t0) / 1000;
    const managedRate = written.length / managedSecs;
    const managedCpu = cpuMs(process.cpuUsage(cpu0)) / written.length;

    // Baseline: the same rows — each run row as created, each transition's row with its
    // real snapshot and phase timings, each log line — written by a bare loop of prepared
    // statements with their parameters made beforehand, one transaction per row: a durable
    // loop that commits every step before the next, with nothing else to do.
    const logs = ids.map((id) => repo.logsAfter(id, 0, 1000));
    await manager.stop();
    fakeRunner.kill();
    db.close();
    const raw = await openDatabase(join(dir, "raw.db"));
    const rawTasks = createTasksRepository(raw);
    rawTasks.create({ team: "default", environmentId: "", id: "task_b", title: "b", description: "", repository: "/r", repositoryUrl: "/r", origin: "bench", createdAt: 0 });
    const insertRun = raw.prepare(`INSERT INTO runs (id, team, environment_id, network_policy_enforced, agent_isolated, task_id, run_number, status, phase, provider, branch,
      result_branch, agent_command, agent_kind, run_mode, permission_policy, limits, image, idempotency_key, deadline_at, created_at, updated_at, snapshot, machine_version,
      priority, open_pull_request, phase_timings, handoff) VALUES (${Array(28).fill("?").join(", ")})`);
    const update = raw.prepare(`UPDATE runs SET status = ?, phase = ?, error_message = ?, exit_code = ?, started_at = ?, finished_at = ?, cleaned_at = ?,
      updated_at = ?, awaiting_input = ?, snapshot = ?, machine_version = ?, phase_timings = coalesce(?, phase_timings) WHERE id = ?`);
    const insertLog = raw.prepare("INSERT INTO run_logs (run_id, seq, time, stream, text, kind, payload) VALUES (?, ?, ?, ?, ?, ?, ?)");
    const byRun = new Map<string, Parameters<typeof repo.transition>[1][]>(ids.map((id) => [id, []]));
    for (const [id, t] of written) byRun.get(id)!.push(t);
    const steps = created.map((r, i) => ({
      run: [r.id, r.team, r.environmentId, r.networkPolicyEnforced ? 1 : 0, r.agentIsolated ? 1 : 0, r.taskId, i + 1, r.status, r.phase, r.provider, r.branch,
        r.resultBranch, JSON.stringify(r.agentCommand), r.agentKind ?? "command", r.runMode ?? "background", r.permissionPolicy ?? "auto_allow", JSON.stringify(r.limits),
        r.image ?? "", r.idempotencyKey, r.deadlineAt, r.createdAt, r.updatedAt, JSON.stringify(r.snapshot), r.machineVersion, r.priority ?? 0, r.openPullRequest ? 1 : 0,
        JSON.stringify(r.phaseTimings ?? []), JSON.stringify(r.handoff ?? {})],
      transitions: byRun.get(r.id)!.map((t) => [t.status, t.phase, t.errorMessage, t.exitCode, t.startedAt, t.finishedAt, t.cleanedAt, t.updatedAt, t.awaitingInput ? 1 : 0,
        t.snapshotJson, t.machineVersion, t.phaseTimings ? JSON.stringify(t.phaseTimings) : null, r.id]),
      logs: logs[i]!.map((l) => [r.id, l.seq, l.time, l.stream, l.text, "log", null]),
    }));
    const t1 = performance.now();
    const cpu1 = process.cpuUsage();
    let rawTransitions = 0;
    for (const step of steps) {
      insertRun.run(step.run);
      for (const t of step.transitions) update.run(t);
      for (const l of step.logs) insertLog.run(l);
      rawTransitions += step.transitions.length;
    }
    const rawRate = rawTransitions / ((performance.now() - t1) / 1000);
    const rawCpu = cpuMs(process.cpuUsage(cpu1)) / rawTransitions;
    raw.close();
    return { managed: managedRate, raw: rawRate, managedCpu, rawCpu };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function benchTransitions() {
  const runs = Number(process.env.BENCH_RUNS ?? 300);
  const rounds = [];
  for (let i = 0; i < ROUNDS; i++) rounds.push(await transitionsRound(runs));
  const managed = median(rounds.map((r) => r.managed));
  const raw = median(rounds.map((r) => r.raw));
  console.log(`transitions: RunManager ${fmt(managed)}/s (durable, with snapshot), raw SQLite loop ${fmt(raw)}/s, ratio ${(managed / raw).toFixed(2)}× (aim ≥ 0.25×; ${runs} runs × ${ROUNDS} rounds, medians)`);
  // CPU time (this process, every thread: the token signatures run in libuv's pool) per
  // transition: on a busy machine the wall-clock ratio above moves with the load, this less.
  const managedCpu = median(rounds.map((r) => r.managedCpu));
  const rawCpu = median(rounds.map((r) => r.rawCpu));
  console.log(`transitions: CPU per transition RunManager ${managedCpu.toFixed(3)} ms, raw SQLite loop ${rawCpu.toFixed(3)} ms, ratio ${(rawCpu / managedCpu).toFixed(2)}× (load average ${loadavg()[0]!.toFixed(1)})`);
}

/** A data dir holding one finished run with `lines` stored lines, written straight into the store. */
async function seedReplayData(lines: number): Promise<string> {
  const dataDir = tmp("replay");
  const db = await openDatabase(join(dataDir, "paddock.db"));
  const tasks = createTasksRepository(db);
  const repo = createRunsRepository(db);
  tasks.create({ team: "default", environmentId: "", id: "task_r", title: "r", description: "", repository: "/r", repositoryUrl: "/r", origin: "bench", createdAt: 0 });
  repo.create({ team: "default", environmentId: "", networkPolicyEnforced: false, agentIsolated: false, id: "run_r", taskId: "task_r", status: "completed", phase: "cleaned", provider: "local", branch: "", resultBranch: "x", agentCommand: ["true"], limits: {}, idempotencyKey: null, deadlineAt: 0, createdAt: 0, updatedAt: 0, snapshot: {}, machineVersion: 1 });
  for (let i = 0; i < lines; i += 10_000) {
    repo.appendLogs("run_r", Array.from({ length: Math.min(10_000, lines - i) }, (_, k) => ({ time: Date.now(), stream: "stdout", text: `line ${i + k} of the agent's output, about sixty bytes long ....` })));
  }
  db.close();
  return dataDir;
}

/** StreamLogs from `port` over gRPC and Connect, against a raw paged read of the same rows here. */
async function measureReplay(label: string, port: number, dbPath: string, lines: number) {
  const db = await openDatabase(dbPath);
  const read = db.prepare<{ seq: number; text: string }>("SELECT seq, time, stream, text FROM run_logs WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?");
  const base = `http://127.0.0.1:${port}`;
  const token = readFileSync(join(dbPath, "..", "admin-token"), "utf8").trim();
  const interceptors = [bearer(token)];
  const clients = {
    "gRPC (HTTP/2)": createClient(TaskRunService, createGrpcTransport({ baseUrl: base, interceptors })),
    "Connect (HTTP/1.1)": createClient(TaskRunService, createConnectTransport({ baseUrl: base, httpVersion: "1.1", interceptors })),
  };
  const rates: Record<string, number[]> = { raw: [] };
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, client] of Object.entries(clients)) {
      let n = 0;
      const t0 = performance.now();
      for await (const res of client.streamLogs({ runId: "run_r", follow: false })) n += res.entries.length;
      (rates[name] ??= []).push(n / ((performance.now() - t0) / 1000));
      if (n !== lines) throw new Error(`replayed ${n} of ${lines} lines`);
    }
    // Baseline: the same rows read in the same pages from SQLite, in this process.
    let m = 0;
    let after = 0;
    const t1 = performance.now();
    for (;;) {
      const page = read.all(["run_r", after, 2000]);
      if (page.length === 0) break;
      m += page.length;
      after = page[page.length - 1]!.seq;
    }
    rates.raw!.push(m / ((performance.now() - t1) / 1000));
  }
  db.close();
  const raw = median(rates.raw!);
  for (const name of Object.keys(clients)) {
    const api = median(rates[name]!);
    console.log(`replay, ${label}: StreamLogs over ${name} ${fmt(api)} lines/s, raw SQLite read ${fmt(raw)} lines/s, ratio ${(api / raw).toFixed(2)}× (aim ≥ 0.3×; ${fmt(lines)} lines × ${ROUNDS} rounds, medians)`);
  }
}

async function benchReplay() {
  const lines = Number(process.env.BENCH_LINES ?? 100_000);
  // (1) The daemon in this Node process: server and client share one thread.
  let dataDir = await seedReplayData(lines);
  const config = loadConfig({}, { dataDir, socket: "", listen: "127.0.0.1:0" });
  const app = await createApp({ config, logger: pino({ level: "silent" }), runnerCommand: runnerCommand(), baseEnv: {} });
  const listener = await app.start();
  try {
    await measureReplay("daemon in the bench process (Node)", listener.port, join(dataDir, "paddock.db"), lines);
  } finally {
    await app.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
  // (2) The shipped binary as its own process, as clients meet it.
  const bin = distBinary();
  if (!existsSync(bin)) return console.log("replay, dist/paddock: skipped (npm run build first)");
  dataDir = await seedReplayData(lines);
  const port = await freePort();
  const daemon = spawn(bin, ["serve", "--data-dir", dataDir, "--listen", `127.0.0.1:${port}`, "--socket", "", "--log-format", "json"], { stdio: ["ignore", "ignore", "pipe"] });
  try {
    let err = "";
    daemon.stderr!.on("data", (d: Buffer) => (err += d));
    for (let i = 0; i < 200 && !err.includes("paddock listening"); i++) await sleep(50);
    await measureReplay("dist/paddock as a separate process", port, join(dataDir, "paddock.db"), lines);
  } finally {
    daemon.kill("SIGTERM");
    await new Promise((r) => daemon.once("exit", r));
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function freePort(): Promise<number> {
  const { createServer } = await import("node:net");
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as import("node:net").AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function rssOf(argv: string[], ready: (out: string) => boolean): Promise<number> {
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d));
  child.stderr!.on("data", (d: Buffer) => (out += d));
  for (let i = 0; i < 200 && !ready(out); i++) await sleep(50);
  await sleep(2000); // let start-up garbage settle: this is the idle figure
  const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"))?.[1]);
  child.kill("SIGTERM");
  await new Promise((r) => child.once("exit", r));
  return kb / 1024;
}

async function benchRss() {
  const bin = distBinary();
  if (!existsSync(bin)) throw new Error("dist/paddock is missing: npm run build first");
  const bun = resolve(import.meta.dirname, "..", "node_modules", ".bin", "bun");
  const daemon: number[] = [];
  const bare: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const dataDir = tmp("rss");
    daemon.push(await rssOf([bin, "serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--log-format", "json"], (o) => o.includes("paddock listening")));
    rmSync(dataDir, { recursive: true, force: true });
    // Baseline: the same Bun runtime doing nothing but an HTTP listener.
    bare.push(await rssOf([bun, "-e", "require('node:http').createServer().listen(0, () => console.log('ready'))"], (o) => o.includes("ready")));
  }
  const d = median(daemon);
  const b = median(bare);
  console.log(`idle RSS: paddock serve ${d.toFixed(1)} MiB, bare Bun with one HTTP listener ${b.toFixed(1)} MiB, ratio ${(d / b).toFixed(2)}× (${ROUNDS} rounds, medians)`);
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

/** Waits until `test(run)` holds, polling the manager (no sleeps beyond 5 ms). */
async function until(app: Awaited<ReturnType<typeof createApp>>, runId: string, test: (phase: string) => boolean): Promise<void> {
  for (;;) {
    if (test(app.runs.get(runId).phase)) return;
    await sleep(5);
  }
}

/**
 * The docker benches' baseline: `n` containers of `image` made through the bare Engine API
 * (create, start, the runner's /health answering), then each removed as `docker rm -f` does.
 * Times of both, in ms. A runner that exits ends the bench, not hangs it.
 */
async function bareRunnerStarts(
  docker: import("dockerode"),
  image: string,
  n: number,
  keysDir: string,
  label: string,
  host: Pick<import("dockerode").ContainerCreateOptions, "HostConfig" | "WorkingDir" | "ExposedPorts"> = {},
): Promise<{ bare: number[]; bareRm: number[] }> {
  const keys = await loadOrCreateSandboxKeys(keysDir);
  const bare: number[] = [];
  const bareRm: number[] = [];
  for (let i = 0; i < n; i++) {
    const runId = `run_bare${i}`;
    const token = await issueSandboxToken(keys, runId);
    const t0 = performance.now();
    const c = await docker.createContainer({ Image: image, Env: [`PADDOCK_RUN_ID=${runId}`, `PADDOCK_RESULT_BRANCH=paddock/${runId}`, `JWT_PUBLIC_KEY=${keys.publicKeyPem}`, `PADDOCK_AGENT_COMMAND=["sleep","300"]`], Labels: { "paddock.bench": label }, ...host });
    await c.start();
    const ip = Object.values((await c.inspect()).NetworkSettings.Networks)[0]!.IPAddress;
    if (!ip) throw new Error("the bare baseline's container has no address");
    for (;;) {
      if (!(await c.inspect()).State.Running) throw new Error(`the bare baseline's runner exited: ${(await c.logs({ stdout: true, stderr: true, tail: 5 })).toString()}`);
      const ok = await fetch(`http://${ip}:47821/health`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.ok, () => false);
      if (ok) break;
      await sleep(5);
    }
    bare.push(performance.now() - t0);
    const volumes = (await c.inspect()).Mounts.filter((m) => m.Type === "volume" && m.Name).map((m) => m.Name!);
    const t1 = performance.now();
    await c.remove({ force: true });
    bareRm.push(performance.now() - t1);
    // `docker rm -f` leaves the runner's anonymous state volume; the bench does not.
    for (const v of volumes) await docker.getVolume(v).remove().catch(() => undefined);
  }
  return { bare, bareRm };
}

/**
 * The engine's floor for a paddock sandbox: bare containers made with the daemon's own
 * settings (its open network, limits, hardening, a read-only source mount), to set beside
 * the default-bridge baseline. A user-defined network costs every container's start its
 * own setup (Docker's embedded DNS among it), which no paddock code adds or can remove.
 */
async function paddockSettingsStarts(docker: import("dockerode"), config: ReturnType<typeof loadConfig>, dataDir: string, source: string, n: number): Promise<number[]> {
  const db = await openDatabase(join(dataDir, "paddock.db"));
  const instance = storedInstance(db);
  db.close();
  const host = hostPart({ source, limits: dockerLimits(config), networkMode: `paddock-open-${instance}` });
  return (await bareRunnerStarts(docker, config.dockerImage, n, join(dataDir, "settings-keys"), "settings", host)).bare;
}

async function benchDocker() {
  const Docker = (await import("dockerode")).default;
  const docker = new Docker();
  try {
    await docker.ping();
  } catch {
    return console.log("docker: skipped (no Docker engine)");
  }
  // The image must hold the runner of this checkout: PADDOCK_DOCKER_IMAGE names the one to
  // build and use (default paddock-sandbox:latest); BENCH_NO_BUILD=1 when it was just built.
  const image = process.env.PADDOCK_DOCKER_IMAGE || "paddock-sandbox:latest";
  if (!process.env.BENCH_NO_BUILD) execSync("npm run --silent build && bash scripts/build-images.sh", { cwd: resolve(import.meta.dirname, ".."), stdio: "ignore", env: { ...process.env, PADDOCK_DOCKER_IMAGE: image } });
  const n = Number(process.env.BENCH_DOCKER_RUNS ?? 10);
  const dataDir = tmp("docker");
  const repo = join(dataDir, "repo");
  // A repository with some weight, so a clone costs what clones cost: 2,000 files, ~16 MB.
  execSync(`git init -q -b main ${repo} && cd ${repo} && for d in $(seq 20); do mkdir -p d$d; for f in $(seq 100); do head -c 8192 /dev/urandom > d$d/f$f; done; done && git add . && git -c user.name=b -c user.email=b@b commit -qm bench`, { shell: "/bin/bash" });
  const config = loadConfig({}, { dataDir, socket: "", listen: "127.0.0.1:0", graceTime: "1s", dockerImage: image });
  const app = await createApp({ config, logger: pino({ level: "silent" }), runnerCommand: runnerCommand(), baseEnv: {} });
  await app.start();
  const tasks = createTasksRepository(await openDatabase(join(dataDir, "paddock.db")));
  const start = async (taskId: string) => app.runs.start({ team: "default", taskId, branch: "", agentCommand: ["sleep", "300"], timeoutMs: null, provider: "docker", idempotencyKey: "", limits: {}, environmentId: "" }).id;
  const timeToRunning = async (taskId: string) => {
    // Each start begins with the network holders at rest: made (~200 ms) after the runner
    // before answered; a start sooner than that makes its network as it starts.
    await (app.providers.get("docker") as DockerProvider).holders.settled();
    const t0 = performance.now();
    const id = await start(taskId);
    await until(app, id, (p) => p === "running" || p === "cleaned");
    if (app.runs.get(id).phase === "cleaned") throw new Error(`run ${id} ended before it ran: ${app.runs.get(id).errorMessage}`);
    const ms = performance.now() - t0;
    // The cancel, too, begins with the holders at rest (not while the next one is being
    // made for the start just measured): as a cancel seconds into a run would.
    await (app.providers.get("docker") as DockerProvider).holders.settled();
    const name = `paddock-${id}-1`;
    const holder = /^container:(.+)$/.exec((await docker.getContainer(name).inspect()).HostConfig.NetworkMode ?? "")?.[1];
    const gone = async (ref: string) => {
      while (await docker.getContainer(ref).inspect().then(() => true, () => false)) await sleep(5);
    };
    const t1 = performance.now();
    app.runs.cancel(id);
    await gone(name);
    const cancelMs = performance.now() - t1;
    if (holder) await gone(holder);
    const holderMs = holder ? performance.now() - t1 : null;
    await until(app, id, (p) => p === "cleaned");
    return { ms, cancelMs, holderMs };
  };
  try {
    // Cold: the first run of each new repository (clone + snapshot). Warm: later runs of one.
    const cold: number[] = [];
    const warm: number[] = [];
    const cancel: number[] = [];
    const cancelHolder: number[] = [];
    for (let i = 0; i < Math.min(n, 5); i++) {
      execSync(`cp -r ${repo} ${repo}${i}`); // a repository the daemon has not seen: no snapshot yet
      const t = tasks.create({ team: "default", environmentId: "", id: `task_cold${i}`, title: "b", description: "", repository: `${repo}${i}`, repositoryUrl: `${repo}${i}`, origin: "bench", createdAt: 0 });
      cold.push((await timeToRunning(t.id)).ms);
    }
    const t = tasks.create({ team: "default", environmentId: "", id: "task_warm", title: "b", description: "", repository: repo, repositoryUrl: repo, origin: "bench", createdAt: 0 });
    await timeToRunning(t.id); // takes the snapshot
    await (app.providers.get("docker") as DockerProvider).snapshotsSettled(); // its index made to match (seconds after the snapshot)
    for (let i = 0; i < n; i++) {
      const r = await timeToRunning(t.id);
      warm.push(r.ms);
      cancel.push(r.cancelMs);
      if (r.holderMs !== null) cancelHolder.push(r.holderMs);
    }

    // Baselines: the same image through the bare Engine API.
    const { bare, bareRm } = await bareRunnerStarts(docker, config.dockerImage, n, join(dataDir, "bench-keys"), "1");
    const settings = await paddockSettingsStarts(docker, config, dataDir, repo, n);
    const line = (label: string, xs: number[], base: number[], baseLabel: string) =>
      console.log(`docker ${label}: p50 ${median(xs).toFixed(0)} ms, p95 ${pct(xs, 0.95).toFixed(0)} ms; ${baseLabel} p50 ${median(base).toFixed(0)} ms, p95 ${pct(base, 0.95).toFixed(0)} ms; ratio p50 ${(median(xs) / median(base)).toFixed(2)}×`);
    line("StartRun → runner healthy (from snapshot)", warm, bare, "bare create+start+health");
    line("StartRun → runner healthy (from snapshot)", warm, settings, "bare create+start+health with paddock's container settings");
    line("cold start (clone + snapshot)", cold, warm, "snapshot start");
    line("CancelRun → container gone", cancel, bareRm, "bare docker rm -f");
    // A sandbox in a network holder's namespace: the holder (the network) goes after it.
    if (cancelHolder.length > 0) line(`CancelRun → container and its network holder gone (${cancelHolder.length} of ${n} in a holder)`, cancelHolder, bareRm, "bare docker rm -f");
    else console.log("docker: no sandbox joined a network holder (--warm-networks 0?)");
  } finally {
    await app.stop();
    await removeDockerBench(docker, "1", dataDir);
  }
}

/**
 * What a docker bench's daemon leaves in the engine and the host's firewall (its bare
 * containers, snapshot images, the instance's networks and chains), then its data dir.
 */
/** The instance id a bench daemon stored in its data dir's database (its networks and chains are named by it). */
function storedInstance(db: Awaited<ReturnType<typeof openDatabase>>): string | undefined {
  return db.prepare<{ value: string }>("SELECT value FROM meta WHERE key = 'instance_id'").get()?.value;
}

async function removeDockerBench(docker: import("dockerode"), label: string, dataDir: string): Promise<void> {
  for (const c of await docker.listContainers({ all: true, filters: { label: [`paddock.bench=${label}`] } })) await docker.getContainer(c.Id).remove({ force: true });
  const db = await openDatabase(join(dataDir, "paddock.db"));
  for (const r of db.prepare<{ image: string }>("SELECT external_id AS image FROM sandbox_snapshots WHERE external_id <> ''").all()) {
    await docker.getImage(r.image).remove({ force: true }).catch(() => undefined);
  }
  const instance = storedInstance(db);
  db.close();
  if (instance) await removeEgressNetwork(docker, instance);
  rmSync(dataDir, { recursive: true, force: true });
}

/**
 * The docker warm pool (--warm-pool 1): StartRun → running (the runner accepted /start; a
 * run from a snapshot has no setup to hold for) on a pool hit and on a miss, against a bare
 * Engine API create+start+health of the same image. A miss is a run of a key the pool has
 * no member for (other limits each time: the same snapshot, another container), made with
 * the pool on, so the refill it starts runs beside it as it would. PADDOCK_DOCKER_IMAGE
 * names the image to build and use (default paddock-sandbox:latest).
 */
async function benchPool() {
  const Docker = (await import("dockerode")).default;
  const docker = new Docker();
  try {
    await docker.ping();
  } catch {
    return console.log("pool: skipped (no Docker engine)");
  }
  const image = process.env.PADDOCK_DOCKER_IMAGE || "paddock-sandbox:latest";
  // The image must hold the runner of this checkout.
  // (BENCH_NO_BUILD=1: it was just built.)
  if (!process.env.BENCH_NO_BUILD) execSync("npm run --silent build && bash scripts/build-images.sh", { cwd: resolve(import.meta.dirname, ".."), stdio: "ignore", env: { ...process.env, PADDOCK_DOCKER_IMAGE: image } });
  const n = Number(process.env.BENCH_DOCKER_RUNS ?? 10);
  const dataDir = tmp("pool");
  const repo = join(dataDir, "repo");
  execSync(`git init -q -b main ${repo} && cd ${repo} && for d in $(seq 20); do mkdir -p d$d; for f in $(seq 100); do head -c 8192 /dev/urandom > d$d/f$f; done; done && git add . && git -c user.name=b -c user.email=b@b commit -qm bench`, { shell: "/bin/bash" });
  const config = loadConfig({}, { dataDir, socket: "", listen: "127.0.0.1:0", graceTime: "1s", dockerImage: image, warmPool: 1 });
  const app = await createApp({ config, logger: pino({ level: "silent" }), runnerCommand: runnerCommand(), baseEnv: {} });
  await app.start();
  const pool = (app.providers.get("docker") as DockerProvider).pool!;
  const tasks = createTasksRepository(await openDatabase(join(dataDir, "paddock.db")));
  const t = tasks.create({ team: "default", environmentId: "", id: "task_pool", title: "b", description: "", repository: repo, repositoryUrl: repo, origin: "bench", createdAt: 0 });
  const holders = (app.providers.get("docker") as DockerProvider).holders;
  const timeToRunning = async (limits: { pids?: number } = {}) => {
    // Every measured start begins with the pool and the network holders at rest.
    await Promise.all([pool.settled(), holders.settled()]);
    const t0 = performance.now();
    const id = app.runs.start({ team: "default", taskId: t.id, branch: "", agentCommand: ["sleep", "300"], timeoutMs: null, provider: "docker", idempotencyKey: "", limits, environmentId: "" }).id;
    await until(app, id, (p) => p === "running");
    const ms = performance.now() - t0;
    // The runner's own lines (stderr, timestamped): where the time inside the sandbox went.
    const runnerLog = process.env.BENCH_POOL_TRACE
      ? ((await docker.getContainer(`paddock-${id}-1`).logs({ stdout: true, stderr: true, timestamps: false })) as unknown as Buffer)
      : null;
    app.runs.cancel(id);
    await until(app, id, (p) => p === "cleaned");
    if (runnerLog) console.log(runnerLog.toString("utf8").replace(/[\x00-\x08]/g, "").split("\n").filter((l) => /^[^ ]*Z /.test(l.replace(/^[^0-9]*/, ""))).map((l) => `  runner ${l.replace(/^[^0-9]*/, "").slice(11, 180)}`).join("\n"));
    if (process.env.BENCH_POOL_TRACE) {
      const db = await openDatabase(join(dataDir, "paddock.db"));
      const rows = db.prepare<{ time: number; text: string }>("SELECT time, text FROM run_logs WHERE run_id = ? AND stream = 'system' ORDER BY seq").all([id]);
      console.log(`${id} ${ms.toFixed(0)} ms:\n` + rows.map((r) => `  +${r.time - rows[0]!.time} ${r.text.slice(0, 240)}`).join("\n"));
      db.close();
    }
    return ms;
  };
  try {
    const { bare } = await bareRunnerStarts(docker, image, n, join(dataDir, "bare-keys"), "pool");
    // The first run snapshots the key, the second fills the pool from the snapshot.
    await timeToRunning();
    await timeToRunning();
    await (app.providers.get("docker") as DockerProvider).snapshotsSettled(); // its index made to match (seconds after the snapshot)
    const hit: number[] = [];
    for (let i = 0; i < n; i++) hit.push(await timeToRunning());
    const miss: number[] = [];
    for (let i = 0; i < n; i++) miss.push(await timeToRunning({ pids: 2000 + i }));
    const settings = await paddockSettingsStarts(docker, config, dataDir, repo, n);
    const line = (label: string, xs: number[], aim: string) =>
      console.log(`pool ${label}: p50 ${median(xs).toFixed(0)} ms, p95 ${pct(xs, 0.95).toFixed(0)} ms; bare create+start+health p50 ${median(bare).toFixed(0)} ms, p95 ${pct(bare, 0.95).toFixed(0)} ms; ratio p50 ${(median(xs) / median(bare)).toFixed(2)}× (aim ${aim})`);
    line("StartRun → runner accepted /start, hit", hit, "≤ 0.15×");
    line("StartRun → runner accepted /start, miss (its network a ready holder's)", miss, "≤ 1.15×");
    console.log(`pool the same miss against bare create+start+health with paddock's container settings (its network, limits, hardening): p50 ${median(settings).toFixed(0)} ms; ratio p50 ${(median(miss) / median(settings)).toFixed(2)}×`);
  } finally {
    await app.stop();
    await removeDockerBench(docker, "pool", dataDir);
  }
}

/**
 * The modal provider's own overhead on the way to a healthy runner, through the local fake
 * control plane (test/fake-modal.ts; sandboxes are local processes of dist/paddock): StartRun
 * → running (create, tunnel, health, bundle import, start) against the fake's bare
 * create + health through the same SDK.
 */
async function benchModal() {
  const root = resolve(import.meta.dirname, "..");
  execSync("npm run --silent build", { cwd: root, stdio: "ignore" });
  const { startFakeModal } = await import("../test/fake-modal.js");
  const { ModalClient } = await import("modal");
  const { createRunnerClient } = await import("../src/sandbox/runner-client.js");
  process.env.MODAL_CONFIG_PATH = "/nonexistent/.modal.toml";
  const fake = await startFakeModal({ paddockBinary: join(root, "dist", "paddock") });
  const n = Number(process.env.BENCH_MODAL_RUNS ?? 10);
  const dataDir = tmp("modal");
  const repo = join(dataDir, "repo");
  execSync(`git init -q -b main ${repo} && cd ${repo} && for f in $(seq 200); do head -c 4096 /dev/urandom > f$f; done && git add . && git -c user.name=b -c user.email=b@b commit -qm bench`, { shell: "/bin/bash" });
  const config = loadConfig({}, { dataDir, socket: "", listen: "127.0.0.1:0", graceTime: "1s", modalImage: "registry.test/paddock-sandbox:bench", modalServerUrl: fake.url, modalTunnelCa: fake.caFile, modalTokenId: "ak-bench", modalTokenSecret: "as-bench" });
  const app = await createApp({ config, logger: pino({ level: "silent" }), runnerCommand: runnerCommand(), baseEnv: {} });
  await app.start();
  const tasks = createTasksRepository(await openDatabase(join(dataDir, "paddock.db")));
  const t = tasks.create({ team: "default", environmentId: "", id: "task_modal", title: "b", description: "", repository: repo, repositoryUrl: repo, origin: "bench", createdAt: 0 });
  const modal = new ModalClient({ tokenId: "ak-bench", tokenSecret: "as-bench" });
  try {
    const timeToRunning = async () => {
      const t0 = performance.now();
      const id = app.runs.start({ team: "default", taskId: t.id, branch: "", agentCommand: ["sleep", "300"], timeoutMs: null, provider: "modal", idempotencyKey: "", limits: {}, environmentId: "" }).id;
      await until(app, id, (p) => p === "running" || p === "cleaned");
      const ms = performance.now() - t0;
      app.runs.cancel(id);
      await until(app, id, (p) => p === "cleaned");
      return ms;
    };
    await timeToRunning(); // the first run takes the snapshot
    const daemon: number[] = [];
    for (let i = 0; i < n; i++) daemon.push(await timeToRunning());

    const keys = await loadOrCreateSandboxKeys(join(dataDir, "bench-keys"));
    const mapp = await modal.apps.fromName("paddock-bench-bare", { createIfMissing: true });
    // The same image the daemon's runs start from (its snapshot): only the daemon's work differs.
    const snapDb = await openDatabase(join(dataDir, "paddock.db"));
    const snapshotImage = snapDb.prepare<{ image: string }>("SELECT external_id AS image FROM sandbox_snapshots WHERE provider = 'modal' AND status = 'complete'").all()[0]!.image;
    snapDb.close();
    const image = await modal.images.fromId(snapshotImage);
    const bare: number[] = [];
    for (let i = 0; i < n; i++) {
      const runId = `run_bare${i}`;
      const token = await issueSandboxToken(keys, runId);
      const t0 = performance.now();
      const sb = await modal.sandboxes.create(mapp, image, {
        command: ["paddock", "agent"],
        encryptedPorts: [47821],
        timeoutMs: 300_000,
        env: { PADDOCK_RUN_ID: runId, JWT_PUBLIC_KEY: keys.publicKeyPem, PADDOCK_AGENT_COMMAND: '["sleep","300"]', PADDOCK_RESULT_BRANCH: "b", PADDOCK_WORKDIR: "/workspace", PADDOCK_STATE_DIR: "/paddock/state", PADDOCK_AGENT_HOME: "/home/agent", PADDOCK_RUNNER_PORT: "47821" },
      });
      const url = (await sb.tunnels())[47821]!.url;
      for (;;) {
        if (await createRunnerClient(url, token).health().then(() => true, () => false)) break;
        await sleep(5);
      }
      bare.push(performance.now() - t0);
      await sb.terminate();
      await sb.wait();
      sb.detach();
    }
    console.log(
      `modal StartRun → runner healthy and started (from snapshot, via the fake): p50 ${median(daemon).toFixed(0)} ms, p95 ${pct(daemon, 0.95).toFixed(0)} ms; fake's bare create+tunnel+health from the same snapshot p50 ${median(bare).toFixed(0)} ms, p95 ${pct(bare, 0.95).toFixed(0)} ms; ratio p50 ${(median(daemon) / median(bare)).toFixed(2)}× (${n} runs each)`,
    );
    // The warm pool: the same StartRun → running on a hit (a member claimed, retagged, then the bundle imported).
    const poolDir = tmp("modal-pool");
    const poolApp = await createApp({ config: { ...config, dataDir: poolDir, warmPool: 1 }, logger: pino({ level: "silent" }), runnerCommand: runnerCommand(), baseEnv: {} });
    await poolApp.start();
    try {
      const poolTasks = createTasksRepository(await openDatabase(join(poolDir, "paddock.db")));
      const pt = poolTasks.create({ team: "default", environmentId: "", id: "task_modal_pool", title: "b", description: "", repository: repo, repositoryUrl: repo, origin: "bench", createdAt: 0 });
      const provider = poolApp.providers.get("modal") as import("../src/sandbox/modal/modal-provider.js").ModalProvider;
      const poolRun = async () => {
        const t0 = performance.now();
        const id = poolApp.runs.start({ team: "default", taskId: pt.id, branch: "", agentCommand: ["sleep", "300"], timeoutMs: null, provider: "modal", idempotencyKey: "", limits: {}, environmentId: "" }).id;
        await until(poolApp, id, (p) => p === "running" || p === "cleaned");
        const ms = performance.now() - t0;
        poolApp.runs.cancel(id);
        await until(poolApp, id, (p) => p === "cleaned");
        return ms;
      };
      await poolRun(); // takes the snapshot
      await poolRun(); // from the snapshot; the pool is filled from it
      const hits: number[] = [];
      for (let i = 0; i < n; i++) {
        await provider.pool.settled();
        hits.push(await poolRun());
      }
      console.log(
        `modal pool hit StartRun → runner healthy and started (via the fake): p50 ${median(hits).toFixed(0)} ms, p95 ${pct(hits, 0.95).toFixed(0)} ms; cold from the snapshot (above) p50 ${median(daemon).toFixed(0)} ms; bare create+tunnel+health p50 ${median(bare).toFixed(0)} ms; hit/bare ${(median(hits) / median(bare)).toFixed(2)}× (${n} runs)`,
      );
    } finally {
      await poolApp.stop();
      rmSync(poolDir, { recursive: true, force: true });
    }
    console.log(`modal: sandboxes left in the fake: ${fake.running().length}; unimplemented RPCs called: ${fake.unimplemented.length}`);
  } finally {
    modal.close();
    await app.stop();
    await fake.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** (a) Unary calls through the token-checking API handler vs the same handler trusted (no token check). */
async function benchAuth() {
  const dataDir = tmp("auth");
  const config = loadConfig({}, { dataDir, socket: "", listen: "127.0.0.1:0" });
  const app = await createApp({ config, logger: pino({ level: "silent" }), runnerCommand: runnerCommand(), baseEnv: {} });
  const { listen } = await import("../src/api/listener.js");
  const withAuth = await listen({ tcp: app.handlers.tcp, unix: app.handlers.unix }, { host: "127.0.0.1", port: 0 });
  const trusted = await listen({ tcp: app.handlers.unix, unix: app.handlers.unix }, { host: "127.0.0.1", port: 0 });
  const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
  const { TaskService } = await import("../src/gen/paddock/v1/task_pb.js");
  try {
    const measure = async (port: number) => {
      const c = createClient(TaskService, createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1", interceptors: [bearer(token)] }));
      const n = 4000;
      const t0 = performance.now();
      let next = 0;
      await Promise.all(Array.from({ length: 16 }, async () => {
        while (next++ < n) await c.listTasks({ pageSize: 1 });
      }));
      return n / ((performance.now() - t0) / 1000);
    };
    const a: number[] = [];
    const b: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      a.push(await measure(withAuth.port));
      b.push(await measure(trusted.port));
    }
    console.log(`auth: ListTasks through the token check ${fmt(median(a))} req/s, same calls trusted (no token check) ${fmt(median(b))} req/s, ratio ${(median(a) / median(b)).toFixed(2)}× (4,000 calls, 16 in flight, ${ROUNDS} rounds, medians)`);
  } finally {
    await withAuth.close();
    await trusted.close();
    await app.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** (b) 100 MB from a local listener: through the egress proxy (CONNECT) vs directly. */
/** Answers with `size` bytes of `chunk`, honouring back-pressure. */
function sendBytes(res: import("node:http").ServerResponse, size: number, chunk: Buffer): void {
  res.writeHead(200, { "content-length": String(size) });
  let sent = 0;
  const pump = () => {
    while (sent < size) {
      sent += chunk.length;
      if (!res.write(chunk)) return void res.once("drain", pump);
    }
    res.end();
  };
  pump();
}

async function benchProxy() {
  const { EgressProxy } = await import("../src/sandbox/egress-proxy.js");
  const { connect } = await import("node:net");
  const size = 100 * 1024 * 1024;
  const chunk = Buffer.alloc(1024 * 1024, 120);
  const source = createServer((_req, res) => {
    sendBytes(res, size, chunk);
  });
  await new Promise<void>((r) => source.listen(0, "127.0.0.1", r));
  const port = (source.address() as AddressInfo).port;
  const proxy = new EgressProxy({
    host: "127.0.0.1",
    port: 0,
    key: Buffer.alloc(32, 1),
    hostMap: { "source.test": "127.0.0.1" },
    // Ports are part of the policy: the source listens on a port of its own.
    policyFor: () => ({ access: "custom", allowedDomains: [`source.test:${port}`], includeTrusted: false }),
    audit: () => undefined,
    log: () => undefined,
  });
  await proxy.start();
  const proxyUrl = new URL(proxy.urlFor("run_bench", "agent"));
  const auth = Buffer.from(`${decodeURIComponent(proxyUrl.username)}:${decodeURIComponent(proxyUrl.password)}`).toString("base64");
  // Reads the raw response to its end and returns the bytes read (headers included).
  const drain = (via: "proxy" | "direct") =>
    new Promise<number>((resolve, reject) => {
      const s = via === "proxy" ? connect(proxy.port, "127.0.0.1") : connect(port, "127.0.0.1");
      let bytes = 0;
      let tunneled = via === "direct";
      s.on("data", (d: Buffer) => {
        if (!tunneled) {
          tunneled = true; // the "200 Connection Established" reply
          s.write(`GET / HTTP/1.1\r\nHost: source.test\r\nConnection: close\r\n\r\n`);
          return;
        }
        bytes += d.length;
      });
      s.on("end", () => resolve(bytes));
      s.on("error", reject);
      s.once("connect", () => {
        if (via === "proxy") s.write(`CONNECT source.test:${port} HTTP/1.1\r\nHost: source.test:${port}\r\nProxy-Authorization: Basic ${auth}\r\n\r\n`);
        else s.write(`GET / HTTP/1.1\r\nHost: source.test\r\nConnection: close\r\n\r\n`);
      });
    });
  const p: number[] = [];
  const d: number[] = [];
  try {
    for (let r = 0; r < ROUNDS; r++) {
      for (const [via, out] of [["proxy", p], ["direct", d]] as const) {
        const t0 = performance.now();
        const bytes = await drain(via);
        if (bytes < size) throw new Error(`${via}: got ${bytes} of ${size} bytes`);
        out.push(size / 1024 / 1024 / ((performance.now() - t0) / 1000));
      }
    }
    console.log(`egress: 100 MB through the proxy (CONNECT) ${median(p).toFixed(0)} MB/s, direct ${median(d).toFixed(0)} MB/s, ratio ${(median(p) / median(d)).toFixed(2)}× (${ROUNDS} rounds, medians)`);
  } finally {
    await proxy.stop();
    source.close();
  }
}

/**
 * (b2) The secret broker's intercepting path against the plain CONNECT tunnel and a direct
 * connection, all HTTPS to one local source with a certificate from a test CA: requests/s
 * (small GETs, 8 keep-alive connections) and MB/s (one 100 MB GET).
 */
async function benchBroker() {
  const { EgressProxy } = await import("../src/sandbox/egress-proxy.js");
  const { BrokerCa } = await import("../src/sandbox/broker-ca.js");
  const https = await import("node:https");
  const http = await import("node:http");
  const tls = await import("node:tls");
  const dir = tmp("broker");
  const ca = await BrokerCa.loadOrCreate(join(dir), "bench");
  const testDir = tmp("broker-up");
  const testCa = await BrokerCa.loadOrCreate(testDir, "bench upstream");
  const size = 100 * 1024 * 1024;
  const chunk = Buffer.alloc(1024 * 1024, 120);
  const leafA = await testCa.issue("brokered.test");
  const leafB = await testCa.issue("plain.test");
  const source = https.createServer({ key: leafA.keyPem, cert: leafA.certPem }, (req, res) => {
    if (req.url === "/small") return void res.end("ok\n");
    sendBytes(res, size, chunk);
  });
  source.addContext("plain.test", { key: leafB.keyPem, cert: leafB.certPem });
  source.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => source.listen(0, "127.0.0.1", r));
  const port = (source.address() as AddressInfo).port;
  const proxy = new EgressProxy({
    host: "127.0.0.1",
    port: 0,
    key: Buffer.alloc(32, 1),
    hostMap: { "brokered.test": "127.0.0.1", "plain.test": "127.0.0.1" },
    policyFor: () => ({ access: "custom", allowedDomains: [`brokered.test:${port}`, `plain.test:${port}`], includeTrusted: false }),
    audit: () => undefined,
    log: () => undefined,
    ca,
    upstreamCa: testCa.certPem,
    brokersFor: () => [{ name: "KEY", value: "sk-bench", rule: { host: "brokered.test", port, pathPrefix: "", header: "x-api-key", template: "{value}", basicUsername: "" } }],
  });
  await proxy.start();
  const proxyUrl = new URL(proxy.urlFor("run_bench", "agent"));
  const auth = `Basic ${Buffer.from(`${decodeURIComponent(proxyUrl.username)}:${decodeURIComponent(proxyUrl.password)}`).toString("base64")}`;
  type Mode = "direct" | "tunnel" | "broker";
  const hostOf = (m: Mode) => (m === "broker" ? "brokered.test" : "plain.test");
  const open = (m: Mode) =>
    new Promise<import("node:tls").TLSSocket>((resolve, reject) => {
      const secure = (socket?: import("node:net").Socket) => {
        const s = tls.connect({ ...(socket ? { socket } : { host: "127.0.0.1", port }), servername: hostOf(m), ca: m === "broker" ? ca.certPem : testCa.certPem, ALPNProtocols: ["http/1.1"] }, () => resolve(s));
        s.once("error", reject);
      };
      if (m === "direct") return secure();
      const req = http.request({ host: "127.0.0.1", port: proxy.port, method: "CONNECT", path: `${hostOf(m)}:${port}`, headers: { "proxy-authorization": auth } });
      req.once("connect", (res, socket) => (res.statusCode === 200 ? secure(socket) : reject(new Error(`CONNECT ${res.statusCode}`))));
      req.once("error", reject);
      req.end();
    });
  /** An agent whose connections are opened by `open` (plain HTTP over the TLS socket it gives). */
  const agentFor = (m: Mode) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
    // createConnection's callback form is how an Agent takes a socket made asynchronously.
    (agent as unknown as { createConnection: (o: unknown, cb: (e: Error | null, s?: unknown) => void) => void }).createConnection = (_o, cb) => void open(m).then((s) => cb(null, s), cb);
    return agent;
  };
  const get = (agent: import("node:http").Agent, m: Mode, path: string) =>
    new Promise<number>((resolve, reject) => {
      const req = http.request({ agent, host: hostOf(m), port, path, headers: { host: `${hostOf(m)}:${port}` } }, (res) => {
        let bytes = 0;
        res.on("data", (d: Buffer) => (bytes += d.length));
        res.on("end", () => resolve(bytes));
        res.on("error", reject);
      });
      req.once("error", reject);
      req.end();
    });
  const modes: Mode[] = ["direct", "tunnel", "broker"];
  const rps: Record<Mode, number[]> = { direct: [], tunnel: [], broker: [] };
  const mbps: Record<Mode, number[]> = { direct: [], tunnel: [], broker: [] };
  const perConn = 250;
  try {
    for (let r = 0; r < ROUNDS; r++) {
      for (const m of modes) {
        const agent = agentFor(m);
        await Promise.all(Array.from({ length: 8 }, () => get(agent, m, "/small"))); // connections (and leaves) made
        const t0 = performance.now();
        await Promise.all(Array.from({ length: 8 }, async () => {
          for (let i = 0; i < perConn; i++) await get(agent, m, "/small");
        }));
        rps[m].push((8 * perConn) / ((performance.now() - t0) / 1000));
        const t1 = performance.now();
        const bytes = await get(agent, m, "/big");
        if (bytes < size) throw new Error(`${m}: got ${bytes} of ${size} bytes`);
        mbps[m].push(size / 1024 / 1024 / ((performance.now() - t1) / 1000));
        agent.destroy();
      }
    }
    const line = (what: string, xs: Record<Mode, number[]>, unit: string) =>
      `${what}: broker ${fmt(median(xs.broker))} ${unit}, CONNECT tunnel ${fmt(median(xs.tunnel))}, direct ${fmt(median(xs.direct))}; broker/tunnel ${(median(xs.broker) / median(xs.tunnel)).toFixed(2)}×, broker/direct ${(median(xs.broker) / median(xs.direct)).toFixed(2)}×`;
    console.log(`${line("egress HTTPS requests/s (8 keep-alive connections, small GETs)", rps, "req/s")} (${ROUNDS} rounds, medians)`);
    console.log(`${line("egress HTTPS 100 MB GET", mbps, "MB/s")} (${ROUNDS} rounds, medians)`);
  } finally {
    await proxy.stop();
    source.closeAllConnections();
    source.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(testDir, { recursive: true, force: true });
  }
}

/**
 * A flood of output: an agent prints 2,000,000 lines of 100 bytes (200 MB) as fast as it
 * can, on the local provider with the compiled runner. Figures: lines stored per second
 * (start to cleaned, every line in SQLite) and the runner's peak RSS, against the raw
 * rate of the same command writing the same lines to a file.
 */
async function benchFlood() {
  const bin = distBinary();
  if (!existsSync(bin)) throw new Error("dist/paddock is missing: npm run build first");
  const LINES = 2_000_000;
  const script = `awk 'BEGIN { s = sprintf("%090d", 0); for (i = 1; i <= ${LINES}; i++) printf "%09d %s\\n", i, s }'`;
  const stored: number[] = [];
  const raw: number[] = [];
  const peaks: number[] = [];
  const rounds = Math.min(ROUNDS, 3);
  for (let r = 0; r < rounds; r++) {
    const dir = tmp("flood");
    const t0 = performance.now();
    execSync(`sh -c ${JSON.stringify(script)} > ${join(dir, "raw.txt")}`);
    raw.push(LINES / ((performance.now() - t0) / 1000));

    const repo = join(dir, "repo");
    execSync(`git init -q -b main ${repo} && git -C ${repo} -c user.name=b -c user.email=b@x commit -q --allow-empty -m init`);
    const dataDir = join(dir, "data");
    const config = loadConfig({}, { dataDir, socket: "", listen: "127.0.0.1:0", logLevel: "silent" });
    const app = await createApp({ config, logger: pino({ level: "silent" }), runnerCommand: [bin, "agent"], baseEnv: { PATH: process.env.PATH } });
    await app.start();
    try {
      const tasks = createTasksRepository(await openDatabase(join(dataDir, "paddock.db")));
      tasks.create({ team: "default", environmentId: "", id: "task_flood", title: "flood", description: "", repository: repo, repositoryUrl: repo, origin: "bench", createdAt: 0 });
      const t1 = performance.now();
      const id = app.runs.start({ team: "default", taskId: "task_flood", branch: "", agentCommand: ["sh", "-c", script], timeoutMs: null, provider: "local", idempotencyKey: "", limits: {}, environmentId: "" }).id;
      const state = join(dataDir, "sandboxes", `paddock-${id}-1`, "state", "runner.json");
      let peak = 0;
      let runnerPid = 0;
      for (;;) {
        const phase = app.runs.get(id).phase;
        if (!runnerPid && existsSync(state)) runnerPid = (JSON.parse(readFileSync(state, "utf8")) as { pid: number }).pid;
        if (runnerPid) {
          // VmHWM: the process's own peak, so a 50 ms poll misses nothing. Gone once it exits.
          const status = existsSync(`/proc/${runnerPid}/status`) ? readFileSync(`/proc/${runnerPid}/status`, "utf8") : "";
          peak = Math.max(peak, Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024);
        }
        if (phase === "cleaned") break;
        await sleep(50);
      }
      stored.push(LINES / ((performance.now() - t1) / 1000));
      peaks.push(peak);
    } finally {
      await app.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const st = median(stored);
  const rw = median(raw);
  console.log(`flood: 2,000,000 × 100-byte lines stored at ${fmt(st)} lines/s (start to cleaned), raw write of the same lines to a file ${fmt(rw)} lines/s, ratio ${(st / rw).toFixed(2)}×; runner peak RSS ${median(peaks).toFixed(1)} MiB (${rounds} rounds, medians)`);
}

/**
 * Run events (ACP session updates): ingest through the whole daemon path after the wire
 * (RunEvents: mapping, redaction, JSON, the store's batched insert, notifications) against
 * a raw batched insert of the same rows; then fan-out of live events to 50 StreamEvents
 * followers over gRPC.
 */
async function benchEvents() {
  const { RunEvents } = await import("../src/runs/run-events.js");
  const { Notifier } = await import("../src/runs/notifier.js");
  const { redactor } = await import("../src/redaction.js");
  const N = 50_000;
  const update = (i: number) => ({ sessionUpdate: "agent_message_chunk", content: { type: "text", text: `chunk ${i} of the agent's answer, some forty bytes` } });
  const events = Array.from({ length: N }, (_, i) => ({ seq: i + 1, time: Date.now(), kind: "acp" as const, sessionId: "s1", updateKind: "agent_message_chunk", update: update(i) }));
  const redact = redactor([{ name: "K", value: "a-secret-value-0123" }]);
  const path: number[] = [];
  const raw: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    for (const which of ["path", "raw"] as const) {
      const dir = tmp("events");
      const db = await openDatabase(join(dir, "e.db"));
      createTasksRepository(db).create({ team: "default", environmentId: "", id: "task_e", title: "e", description: "", repository: "/e", repositoryUrl: "/e", origin: "bench", createdAt: 0 });
      const repo = createRunsRepository(db);
      repo.create({ team: "default", environmentId: "", networkPolicyEnforced: false, agentIsolated: false, id: "run_e", taskId: "task_e", status: "in_progress", phase: "running", provider: "local", branch: "", resultBranch: "x", agentCommand: ["true"], limits: {}, idempotencyKey: null, deadlineAt: 0, createdAt: 0, updatedAt: 0, snapshot: {}, machineVersion: 1 });
      const t0 = performance.now();
      if (which === "path") {
        const runEvents = new RunEvents(repo, new Notifier(), () => "running");
        for (let i = 0; i < N; i += 2000) runEvents.ingest("run_e", events.slice(i, i + 2000), redact);
        path.push(N / ((performance.now() - t0) / 1000));
      } else {
        // Baseline: rows already made, inserted in the same batches.
        const rows = events.map((e) => ({ time: e.time, stream: "agent_update", text: "", kind: "agent_update" as const, payload: JSON.stringify(e.update) }));
        const t1 = performance.now();
        for (let i = 0; i < N; i += 2000) repo.appendLogs("run_e", rows.slice(i, i + 2000));
        raw.push(N / ((performance.now() - t1) / 1000));
      }
      db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  console.log(`events: ingest through RunEvents ${fmt(median(path))} events/s, raw batched insert of the same rows ${fmt(median(raw))} events/s, ratio ${(median(path) / median(raw)).toFixed(2)}× (${fmt(N)} ACP updates × ${ROUNDS} rounds, medians)`);

  // Fan-out: followers of a real run (its agent prints 10,000 lines) over gRPC, from its start.
  const fanout = async (followers: number): Promise<number> => {
    const dir = tmp("fanout");
    const repoDir = join(dir, "repo");
    execSync(`git init -q -b main ${repoDir} && git -C ${repoDir} -c user.name=b -c user.email=b@x commit -q --allow-empty -m init`);
    const dataDir = join(dir, "data");
    const config = loadConfig({}, { dataDir, socket: "", listen: "127.0.0.1:0", logLevel: "silent" });
    const app = await createApp({ config, logger: pino({ level: "silent" }), runnerCommand: runnerCommand(), baseEnv: { PATH: process.env.PATH } });
    const listener = await app.start();
    try {
      const tasks = createTasksRepository(await openDatabase(join(dataDir, "paddock.db")));
      tasks.create({ team: "default", environmentId: "", id: "task_f", title: "f", description: "", repository: repoDir, repositoryUrl: repoDir, origin: "bench", createdAt: 0 });
      const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
      const client = createClient(TaskRunService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${listener.port}`, interceptors: [bearer(token)] }));
      const t0 = performance.now();
      const id = app.runs.start({ team: "default", taskId: "task_f", branch: "", agentCommand: ["seq", "-f", "line %.0f", "1", "10000"], timeoutMs: null, provider: "local", idempotencyKey: "", limits: {}, environmentId: "" }).id;
      await Promise.all(
        Array.from({ length: followers }, async () => {
          for await (const res of client.streamEvents({ runId: id, follow: true })) {
            if (res.events.some((e) => e.kind.case === "log" && e.kind.value.text === "line 10000")) return;
          }
        }),
      );
      const ms = performance.now() - t0;
      await app.runs.waitForCleaned(id, AbortSignal.timeout(60_000));
      return ms;
    } finally {
      await app.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const one: number[] = [];
  const fifty: number[] = [];
  for (let r = 0; r < Math.min(ROUNDS, 3); r++) {
    one.push(await fanout(1));
    fifty.push(await fanout(50));
  }
  console.log(`events fan-out: a run's 10,000 lines reach 50 gRPC followers in ${fmt(median(fifty))} ms from its start, 1 follower in ${fmt(median(one))} ms, ratio ${(median(one) / median(fifty)).toFixed(2)}× (${Math.min(ROUNDS, 3)} rounds, medians)`);
}

/**
 * The web UI's page load in Chromium (Debian's, driven by playwright-core), against the
 * shipped binary with its embedded UI and a store of 200 tasks and 50 runs: bytes
 * transferred and time from navigation to the first run list, cold (new profile) and warm
 * (cached assets), also with the CPU slowed 4× as on a slow laptop. Baseline: a hand-written
 * page of 1 KB (no framework, no protobuf runtime, JSON) served at the same origin, which
 * fetches the same ListRuns and writes the rows with innerHTML.
 */
async function benchWeb() {
  const chromiumPath = process.env.PADDOCK_CHROMIUM || "/usr/bin/chromium";
  if (!existsSync(chromiumPath)) return console.log(`web: skipped (no chromium at ${chromiumPath})`);
  const bin = distBinary();
  if (!existsSync(bin)) return console.log("web: skipped (npm run build first: the binary embeds the UI)");
  const { chromium } = await import("playwright-core");
  const dataDir = tmp("web");
  const db = await openDatabase(join(dataDir, "paddock.db"));
  const tasks = createTasksRepository(db);
  const runsRepo = createRunsRepository(db);
  const now = Date.now();
  for (let i = 0; i < 200; i++) tasks.create({ team: "default", environmentId: "", id: `task_w${i}`, title: `Task ${i}: fix the flaky test in module ${i}`, description: "", repository: "owner/repo", repositoryUrl: "https://git.example.test/owner/repo", origin: "bench", createdAt: now - i * 1000 });
  for (let i = 0; i < 50; i++) {
    runsRepo.create({ team: "default", environmentId: "", networkPolicyEnforced: true, agentIsolated: true, id: `run_w${i}`, taskId: `task_w${i}`, status: "completed", phase: "cleaned", provider: "docker", branch: "", resultBranch: `paddock/run_w${i}`, agentCommand: ["true"], limits: {}, idempotencyKey: null, deadlineAt: now, createdAt: now - i * 1000, updatedAt: now, snapshot: {}, machineVersion: 1 });
  }
  db.close();
  const port = await freePort();
  const daemon = spawn(bin, ["serve", "--data-dir", dataDir, "--listen", `127.0.0.1:${port}`, "--socket", "", "--log-format", "json"], { stdio: ["ignore", "ignore", "pipe"] });
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
  try {
    let err = "";
    daemon.stderr!.on("data", (d: Buffer) => (err += d));
    for (let i = 0; i < 200 && !err.includes("paddock listening"); i++) await sleep(50);
    const url = `http://127.0.0.1:${port}`;
    const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
    const baselineHtml = `<!doctype html><meta charset="utf-8"><title>baseline</title><table id="runs"></table><script>
      fetch("/paddock.v1.TaskRunService/ListRuns", { method: "POST", headers: { "content-type": "application/json", "connect-protocol-version": "1", authorization: "Bearer ${token}" }, body: JSON.stringify({ pageSize: 20 }) })
        .then((r) => r.json()).then((j) => { document.getElementById("runs").innerHTML = j.runs.map((r) => '<tr data-testid="run-row"><td><a href="#/runs/' + r.id + '">' + r.id + "</a></td><td>" + r.status + "</td><td>" + r.provider + "</td></tr>").join(""); });
    </script>`;

    /** One page load in `context`: ms to the first run row and bytes over the wire (UI files, API). */
    const load = async (context: import("playwright-core").BrowserContext, path: string, cpuSlowdown: number) => {
      const page = await context.newPage();
      if (cpuSlowdown > 1) await (await context.newCDPSession(page)).send("Emulation.setCPUThrottlingRate", { rate: cpuSlowdown });
      const sizes: Promise<{ api: boolean; bytes: number }>[] = [];
      page.on("requestfinished", (req) => sizes.push(req.sizes().then((s) => ({ api: req.url().includes(".v1."), bytes: s.responseHeadersSize + s.responseBodySize }))));
      const t0 = performance.now();
      await page.goto(`${url}${path}`);
      await page.locator("[data-testid=run-row]").first().waitFor();
      const ms = performance.now() - t0;
      const all = await Promise.all(sizes);
      await page.close();
      return { ms, ui: all.filter((s) => !s.api).reduce((a, s) => a + s.bytes, 0), api: all.filter((s) => s.api).reduce((a, s) => a + s.bytes, 0) };
    };
    const newContext = async (baseline: boolean) => {
      const context = await browser.newContext();
      // Signed in already: the token is in the tab's session, as after the sign-in form.
      await context.addInitScript(`sessionStorage.setItem("paddock.token", ${JSON.stringify(token)})`);
      // The baseline page comes from the browser itself (no bytes for it); its API call goes to the daemon.
      if (baseline) await context.route(`${url}/baseline`, (route) => route.fulfill({ contentType: "text/html", body: baselineHtml }));
      return context;
    };
    const rows: string[] = [];
    for (const slowdown of [1, 4]) {
      const cold: Awaited<ReturnType<typeof load>>[] = [];
      const warm: Awaited<ReturnType<typeof load>>[] = [];
      const base: Awaited<ReturnType<typeof load>>[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        const ui = await newContext(false);
        cold.push(await load(ui, "/", slowdown));
        warm.push(await load(ui, "/", slowdown));
        await ui.close();
        const b = await newContext(true);
        base.push(await load(b, "/baseline", slowdown));
        await b.close();
      }
      const m = (xs: { ms: number }[]) => median(xs.map((x) => x.ms));
      const kb = (xs: { ui: number; api: number }[], k: "ui" | "api") => (median(xs.map((x) => x[k])) / 1024).toFixed(1);
      rows.push(
        `web page load${slowdown > 1 ? ` (CPU ${slowdown}× slower)` : ""}: first run list in ${fmt(m(cold))} ms cold (${kb(cold, "ui")} KB of UI + ${kb(cold, "api")} KB of API over the wire), ` +
          `${fmt(m(warm))} ms warm (${kb(warm, "ui")} KB + ${kb(warm, "api")} KB); hand-written 1 KB page ${fmt(m(base))} ms (${kb(base, "api")} KB of API); ` +
          `ratio cold/baseline ${(m(cold) / m(base)).toFixed(2)}×, warm/baseline ${(m(warm) / m(base)).toFixed(2)}× (${ROUNDS} rounds, medians)`,
      );
    }
    for (const row of rows) console.log(row);
  } finally {
    await browser.close();
    daemon.kill();
    await new Promise((r) => daemon.once("exit", r));
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * What a Prometheus scrape costs the daemon: GET /metrics against a real daemon whose
 * store holds `stored` finished runs (the runs-by-status gauge reads the table at every
 * scrape), next to GET /healthz on the same server and connection as the baseline.
 */
async function benchMetrics() {
  const SCRAPES = 200;
  const measure = async (stored: number) => {
    const dir = tmp("metrics");
    const dataDir = join(dir, "data");
    try {
      mkdirSync(dataDir, { mode: 0o700 });
      const seedDb = await openDatabase(join(dataDir, "paddock.db"));
      const tasks = createTasksRepository(seedDb);
      const repo = createRunsRepository(seedDb);
      tasks.create({ team: "default", environmentId: "", id: "task_m", title: "m", description: "", repository: "/r", repositoryUrl: "/r", origin: "bench", createdAt: 0 });
      const statuses = ["completed", "failed", "cancelled"] as const;
      seedDb.transaction(() => {
        for (let i = 0; i < stored; i++) {
          const status = statuses[i % 3]!;
          repo.create({
            id: `run_m${i}`, team: "default", environmentId: "", networkPolicyEnforced: false, agentIsolated: false, taskId: "task_m", status, phase: "cleaned",
            provider: i % 2 ? "docker" : "local", branch: "", resultBranch: "", agentCommand: ["true"], limits: {}, idempotencyKey: null,
            deadlineAt: 0, createdAt: i, updatedAt: i, snapshot: {}, machineVersion: 1,
          });
        }
      });
      seedDb.close();
      const config = loadConfig({}, { dataDir, socket: "", listen: "127.0.0.1:0", logLevel: "silent", dockerSocket: join(dir, "no-docker.sock") });
      const app = await createApp({ config, logger: pino({ level: "silent" }), runnerCommand: runnerCommand(), baseEnv: { PATH: process.env.PATH } });
      const listener = await app.start();
      try {
        const base = `http://127.0.0.1:${listener.port}`;
        const time = async (path: string) => {
          const ms: number[] = [];
          let bytes = 0;
          for (let i = 0; i < SCRAPES; i++) {
            const t0 = performance.now();
            const body = await (await fetch(base + path)).text();
            ms.push(performance.now() - t0);
            bytes = body.length;
          }
          return { ms: median(ms), bytes };
        };
        await time("/metrics"); // warm-up: JIT, statement cache
        return { metrics: await time("/metrics"), healthz: await time("/healthz") };
      } finally {
        await app.stop();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  for (const stored of [0, 100_000]) {
    const rounds = [];
    for (let r = 0; r < Math.min(ROUNDS, 3); r++) rounds.push(await measure(stored));
    const m = median(rounds.map((x) => x.metrics.ms));
    const h = median(rounds.map((x) => x.healthz.ms));
    console.log(
      `metrics scrape: GET /metrics ${m.toFixed(2)} ms (${fmt(rounds[0]!.metrics.bytes)} bytes) with ${fmt(stored)} stored runs, GET /healthz ${h.toFixed(2)} ms on the same server, ratio ${(m / h).toFixed(1)}× (${SCRAPES} sequential requests × ${Math.min(ROUNDS, 3)} rounds, medians)`,
    );
  }
}

/** Heap in use after a collection where the runtime lets us ask for one. */
function settledHeap(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().heapUsed;
}

/** Wall time of one process from spawn to exit, in ms. */
function timeProcess(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolveTime, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: "ignore", env });
    child.on("error", reject);
    child.on("exit", () => resolveTime(performance.now() - t0));
  });
}

/** Wall time from spawn until the process prints `ready` on stderr or stdout, in ms; then it is killed. */
function timeUntilReady(argv: string[], ready: string, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolveTime, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"], env });
    let out = "";
    let took = 0;
    const seen = (d: Buffer) => {
      out += d;
      if (!took && out.includes(ready)) {
        took = performance.now() - t0;
        child.kill("SIGKILL");
      }
    };
    child.stdout!.on("data", seen);
    child.stderr!.on("data", seen);
    child.on("error", reject);
    child.on("exit", () => (took ? resolveTime(took) : reject(new Error(`${argv.join(" ")} exited before "${ready}": ${out}`))));
  });
}

/**
 * Start-up of the binary for the roles that start most often (every CLI call, every local
 * runner) against bare Bun-compiled programs built here (a hello; an HTTP listener), run in
 * turn. The CLI call against a daemon talks to a `dist/paddock serve` started here.
 */
async function benchStartup() {
  const bin = distBinary();
  if (!existsSync(bin)) throw new Error("dist/paddock is missing: npm run build first");
  const bun = resolve(import.meta.dirname, "..", "node_modules", ".bin", "bun");
  const dir = tmp("startup");
  const dataDir = join(dir, "data");
  const daemon = spawn(bin, ["serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--log-format", "json"], { stdio: ["ignore", "ignore", "pipe"] });
  try {
    execSync(`echo 'console.log("hello")' > ${dir}/hello.ts && ${bun} build --compile ${dir}/hello.ts --outfile ${dir}/hello`, { stdio: "ignore" });
    execSync(
      `echo 'const s = require("node:http").createServer(); s.listen(0, "127.0.0.1", () => console.error("listening on " + s.address().port));' > ${dir}/listener.ts && ${bun} build --compile ${dir}/listener.ts --outfile ${dir}/listener`,
      { stdio: "ignore" },
    );
    let err = "";
    daemon.stderr!.on("data", (d: Buffer) => (err += d));
    for (let i = 0; i < 400 && !err.includes("paddock listening"); i++) await sleep(50);
    const keys = await loadOrCreateSandboxKeys(dir);
    mkdirSync(join(dir, "work"));
    // A runner as the local provider starts one (held until POST /start): until it listens.
    const runnerEnv = {
      PATH: process.env.PATH,
      PADDOCK_RUN_ID: "run_bench1",
      PADDOCK_RUNNER_HOST: "127.0.0.1",
      PADDOCK_RUNNER_PORT: "0",
      PADDOCK_WORKDIR: join(dir, "work"),
      PADDOCK_STATE_DIR: join(dir, "state"),
      PADDOCK_RESULT_BRANCH: "paddock/run_bench1",
      PADDOCK_AGENT_COMMAND: JSON.stringify(["true"]),
      PADDOCK_AGENT_HOME: join(dir, "home"),
      JWT_PUBLIC_KEY: keys.publicKeyPem,
    };
    const cliEnv = { ...process.env, PADDOCK_DATA_DIR: dataDir };
    const n = Math.max(ROUNDS * 4, 20);
    const roles: [string, () => Promise<number>, "hello" | "listener"][] = [
      ["--version", () => timeProcess([bin, "--version"]), "hello"],
      ["run start --help (CLI)", () => timeProcess([bin, "run", "start", "--help"]), "hello"],
      ["task list (CLI against a daemon)", () => timeProcess([bin, "task", "list"], cliEnv), "hello"],
      ["agent --help (runner, bad environment)", () => timeProcess([bin, "agent", "--help"]), "hello"],
      ["agent until it listens (command runner)", () => (rmSync(join(dir, "state"), { recursive: true, force: true }), timeUntilReady([bin, "agent"], "listening on", runnerEnv)), "listener"],
    ];
    const base = { hello: [] as number[], listener: [] as number[] };
    const times = roles.map(() => [] as number[]);
    for (let i = 0; i < n; i++) {
      base.hello.push(await timeProcess([`${dir}/hello`]));
      base.listener.push(await timeUntilReady([`${dir}/listener`], "listening on"));
      for (const [k, [, run]] of roles.entries()) times[k]!.push(await run());
    }
    const label = { hello: "bare Bun-compiled hello", listener: "bare Bun-compiled HTTP listener until it listens" };
    for (const [k, [name, , against]] of roles.entries()) {
      const m = median(times[k]!);
      const h = median(base[against]);
      console.log(`start-up: paddock ${name} ${m.toFixed(1)} ms, ${label[against]} ${h.toFixed(1)} ms, ratio ${(m / h).toFixed(1)}× (aim ≤ 3×; ${n} runs each, alternating, medians)`);
    }
  } finally {
    daemon.kill("SIGTERM");
    await new Promise((r) => daemon.once("exit", r));
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A daemon with `count` running runs restarts: how long until every run has reached its
 * provider again, and how many provider calls were in flight at once (bounded by
 * --reconcile-concurrency), against the same calls made all at once by a bare loop.
 */
async function benchRestore() {
  const count = Number(process.env.BENCH_RUNS ?? 1000);
  const dir = tmp("restore");
  const PROVIDER_MS = 5;
  let inFlight = 0;
  let peak = 0;
  let inspected = 0;
  const slowly = async <T>(v: T): Promise<T> => {
    peak = Math.max(peak, ++inFlight);
    await sleep(PROVIDER_MS);
    inFlight--;
    return v;
  };
  // Runners that take /start and then long-poll /events with nothing to say, like idle agents.
  const runner = createServer((req, res) => {
    req.resume();
    if (req.url?.startsWith("/events")) setTimeout(() => res.end(JSON.stringify({ events: [] })), 200);
    else res.end("{}");
  });
  await new Promise<void>((r) => runner.listen(0, "127.0.0.1", r));
  const endpoint = `http://127.0.0.1:${(runner.address() as AddressInfo).port}`;
  const provider: SandboxProvider = {
    name: "bench",
    enforcesNetworkPolicy: false,
    isolatesAgents: false,
    provision: () => slowly({ state: "running" as const, endpoint }),
    inspect: () => (inspected++, slowly({ state: "running" as const, endpoint })),
    destroy: async () => ({}),
    list: async () => [],
  };
  const open = async () => {
    const db = await openDatabase(join(dir, "paddock.db"));
    const tasks = createTasksRepository(db);
    const manager = new RunManager({
      tasks,
      environments: { get: () => undefined, secretValues: () => [] },
      runs: createRunsRepository(db),
      providers: new Map([["bench", provider]]),
      keys: await loadOrCreateSandboxKeys(dir),
      logger: pino({ level: "silent" }),
      settings: { defaultAgentCommand: ["true"], defaultTimeoutMs: 3_600_000, defaultProvider: "bench", maxConcurrentRuns: count, pollWaitMs: 1000, logBudget: { maxBytes: 1024 ** 3, maxLines: 10_000_000 }, reapIntervalMs: 3_600_000, sandboxImages: [], reconcileConcurrency: 8 },
    });
    return { db, tasks, manager };
  };
  try {
    const first = await open();
    first.tasks.create({ team: "default", environmentId: "", id: "task_b", title: "b", description: "", repository: "/r", repositoryUrl: "/r", origin: "bench", createdAt: 0 });
    const ids = [];
    const heapBefore = settledHeap();
    for (let i = 0; i < count; i++) ids.push(first.manager.start({ team: "default", taskId: "task_b", branch: "", agentCommand: [], timeoutMs: null, provider: "", idempotencyKey: "", limits: {}, environmentId: "" }).id);
    while (ids.some((id) => first.manager.get(id).phase !== "running")) await sleep(20);
    const perRun = (settledHeap() - heapBefore) / count;
    console.log(`memory: ${fmt(perRun / 1024)} KiB of JS heap per live (running) run, ${fmt(count)} runs in one manager`);
    await first.manager.stop();
    first.db.close();

    inspected = 0;
    peak = 0;
    const second = await open();
    const t0 = performance.now();
    await second.manager.restore();
    while (inspected < count) await sleep(5);
    const restoredMs = performance.now() - t0;
    const restoredPeak = peak;
    await second.manager.stop();
    second.db.close();

    peak = 0;
    const t1 = performance.now();
    await Promise.all(ids.map(() => provider.inspect("x")));
    const bareMs = performance.now() - t1;
    console.log(
      `restore: ${fmt(count)} running runs back in touch with their provider ${fmt(restoredMs)} ms after restore(), at most ${restoredPeak} provider calls at once (--reconcile-concurrency 8); the same ${fmt(count)} calls all at once: ${fmt(bareMs)} ms, ${peak} at once (provider call ${PROVIDER_MS} ms)`,
    );
  } finally {
    runner.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A git repository with one commit, for runs to check out. */
function benchRepo(dir: string): string {
  const repo = join(dir, "repo");
  mkdirSync(repo);
  execSync("git init --quiet -b main && echo hello > README.md && git add . && git -c user.name=b -c user.email=b@b commit --quiet -m initial", { cwd: repo });
  return repo;
}

/**
 * Fills a daemon's queue: one run holds the only slot (its agent sleeps), then `count` more
 * StartRun calls queue behind it. Returns the daemon's memory before and after, read by
 * `measure`, once the queue holds them all.
 */
async function fillQueue(port: number, token: string, repo: string, count: number, measure: () => Promise<{ rss: number; heap: number }>) {
  const { TaskService } = await import("../src/gen/paddock/v1/task_pb.js");
  const transport = createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1", interceptors: [bearer(token)] });
  const tasks = createClient(TaskService, transport);
  const runs = createClient(TaskRunService, transport);
  const { task } = await tasks.createTask({ title: "queued", repository: repo, description: "x" });
  const busy = (await runs.startRun({ taskId: task!.id, agentCommand: ["sleep", "3600"] })).run!;
  try {
    return await queueBehind(runs, task!.id, busy.id, count, measure);
  } finally {
    // The busy run's runner and agent are processes of their own: end them before the daemon.
    await runs.cancelRun({ runId: busy.id });
    while (!(await runs.getRun({ runId: busy.id })).run!.cleanedAt) await sleep(50);
  }
}

async function queueBehind(runs: ReturnType<typeof createClient<typeof TaskRunService>>, taskId: string, busyId: string, count: number, measure: () => Promise<{ rss: number; heap: number }>) {
  while ((await runs.getRun({ runId: busyId })).run!.phase !== "running") await sleep(50);
  const before = await measure();
  const ids: string[] = [];
  // 8 at once: the daemon's API, not this client, sets the pace.
  for (let i = 0; i < count; i += 8) {
    const batch = await Promise.all(Array.from({ length: Math.min(8, count - i) }, () => runs.startRun({ taskId, agentCommand: ["true"] })));
    ids.push(...batch.map((r) => r.run!.id));
  }
  const phases = new Map<string, number>();
  for (let i = 0; i < ids.length; i += 100) {
    for (const id of ids.slice(i, i + 100)) {
      const p = (await runs.getRun({ runId: id })).run!.phase;
      phases.set(p, (phases.get(p) ?? 0) + 1);
    }
  }
  if (phases.get("queued") !== count) throw new Error(`expected ${count} queued runs: ${JSON.stringify([...phases])}`);
  const after = await measure();
  // Cancelled before the busy run frees its slot: else they start while the daemon stops,
  // and their runners (which outlive a daemon, to be re-attached) would outlive the bench.
  for (let i = 0; i < ids.length; i += 8) await Promise.all(ids.slice(i, i + 8).map((runId) => runs.cancelRun({ runId })));
  return { before, after };
}

const rssOfPid = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]) * 1024;

/**
 * Memory per queued run: a daemon with one busy slot takes `count` more runs into its queue.
 * (1) dist/paddock as its own process: RSS growth per queued run. (2) The same daemon
 * in this Node process (createApp): RSS and JS heap growth (after a full GC) per queued run.
 */
async function benchQueued() {
  const count = Number(process.env.BENCH_RUNS ?? 1000);
  const settle = async () => {
    for (let i = 0; i < 3; i++) {
      (globalThis as { gc?: () => void }).gc?.();
      await sleep(500);
    }
  };
  const report = (label: string, before: { rss: number; heap: number }, after: { rss: number; heap: number }, idleRss: number) => {
    const rss = (after.rss - before.rss) / count / 1024;
    const heap = after.heap ? `, JS heap ${fmt((after.heap - before.heap) / count / 1024)} KiB per run` : "";
    console.log(`queued runs, ${label}: RSS ${fmt(rss)} KiB per queued run${heap} (aim ≤ 256 KiB; ${fmt(count)} queued behind 1 busy slot; idle daemon RSS ${(idleRss / 1024 ** 2).toFixed(1)} MiB, with the queue ${(after.rss / 1024 ** 2).toFixed(1)} MiB)`);
  };
  const bin = distBinary();
  if (existsSync(bin)) {
    const dir = tmp("queued");
    const dataDir = join(dir, "data");
    const port = await freePort();
    const daemon = spawn(bin, ["serve", "--data-dir", dataDir, "--listen", `127.0.0.1:${port}`, "--socket", "", "--log-format", "json", "--log-level", "warn", "--max-concurrent-runs", "1", "--max-queued-runs-per-team", String(count * 2), "--default-provider", "local"], { stdio: ["ignore", "ignore", "pipe"] });
    try {
      let err = "";
      daemon.stderr!.on("data", (d: Buffer) => (err += d));
      for (let i = 0; i < 400 && !err.includes("paddock listening"); i++) await sleep(50);
      await sleep(2000);
      const idle = rssOfPid(daemon.pid!);
      const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
      const measure = async () => (await sleep(2000), { rss: rssOfPid(daemon.pid!), heap: 0 });
      const { before, after } = await fillQueue(port, token, benchRepo(dir), count, measure);
      report("dist/paddock as its own process", before, after, idle);
    } finally {
      daemon.kill("SIGTERM");
      await new Promise((r) => daemon.once("exit", r));
      rmSync(dir, { recursive: true, force: true });
    }
  } else console.log("queued runs, dist/paddock: skipped (npm run build first)");

  const dir = tmp("queued-node");
  const config = loadConfig({}, { dataDir: join(dir, "data"), socket: "", listen: "127.0.0.1:0", maxConcurrentRuns: "1", maxQueuedRunsPerTeam: String(count * 2), defaultProvider: "local" });
  const app = await createApp({ config, logger: pino({ level: "silent" }), runnerCommand: runnerCommand(), baseEnv: { PATH: process.env.PATH } });
  const listener = await app.start();
  try {
    await settle();
    const idle = process.memoryUsage().rss;
    const token = readFileSync(join(dir, "data", "admin-token"), "utf8").trim();
    const measure = async () => (await settle(), { rss: process.memoryUsage().rss, heap: process.memoryUsage().heapUsed });
    const { before, after } = await fillQueue(listener.port, token, benchRepo(dir), count, measure);
    report("daemon in the bench process (Node, createApp)", before, after, idle);
  } finally {
    await app.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * StartRun → agent started on the local provider (dist/paddock serve, its runners the same
 * binary), against a bare `git worktree add` of the same repository + spawn of the same
 * agent, in turn. "Started" is the instant the agent itself writes (date +%s%N), so no
 * poll of ours is in either figure. Two paddock figures: a run with no environment (today's
 * path: a runner started for the run, a pool miss) and a run of an environment with
 * warm_pool 1 that takes a pool member (a hit; each round starts once the refilled member
 * is ready, as a run arriving later would find it, so the refill competes with nothing timed).
 */
async function benchLocal() {
  const bin = distBinary();
  if (!existsSync(bin)) throw new Error("dist/paddock is missing: npm run build first");
  const rounds = Math.max(ROUNDS * 2, 10);
  const dir = tmp("local");
  const dataDir = join(dir, "data");
  const repo = benchRepo(dir);
  const port = await freePort();
  const daemon = spawn(bin, ["serve", "--data-dir", dataDir, "--listen", `127.0.0.1:${port}`, "--socket", "", "--log-format", "json", "--log-level", "warn", "--default-provider", "local"], { stdio: ["ignore", "ignore", "pipe"] });
  // The agents write here: as root the daemon gives each agent a uid of its own.
  const marks = join(dir, "marks");
  mkdirSync(marks);
  chmodSync(dir, 0o711);
  chmodSync(marks, 0o1777);
  const startedAt = (file: string) => Number(readFileSync(file, "utf8").trim()) / 1e6;
  const agent = (file: string) => ["sh", "-c", `date +%s%N > ${file}`];
  /** Pool members waiting for their claim (their runner said so in its log). */
  const readyMembers = () => {
    const root = join(dataDir, "sandboxes");
    const says = (n: string) => {
      try {
        return readFileSync(join(root, n, "state", "runner.log"), "utf8").includes("waiting for its claim");
      } catch {
        return false; // not started yet, or claimed and gone
      }
    };
    return (existsSync(root) ? readdirSync(root) : []).filter((n) => n.startsWith("paddock-pool-") && says(n)).length;
  };
  try {
    let err = "";
    daemon.stderr!.on("data", (d: Buffer) => (err += d));
    for (let i = 0; i < 400 && !err.includes("paddock listening"); i++) await sleep(50);
    const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
    const { TaskService } = await import("../src/gen/paddock/v1/task_pb.js");
    const { EnvironmentService, NetworkAccess } = await import("../src/gen/paddock/v1/environment_pb.js");
    const transport = createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1", interceptors: [bearer(token)] });
    const tasks = createClient(TaskService, transport);
    const runs = createClient(TaskRunService, transport);
    const envs = createClient(EnvironmentService, transport);
    const { task } = await tasks.createTask({ title: "local", repository: repo, description: "x" });
    const env = (await envs.createEnvironment({ environment: { name: "warm", networkAccess: NetworkAccess.FULL, warmPool: 1, repositories: [repo] } })).environment!;
    const { task: warmTask } = await tasks.createTask({ title: "local warm", repository: repo, description: "x", environmentId: env.id });
    const paddock: number[] = [];
    const hits: number[] = [];
    const bare: number[] = [];
    const provisioning: number[] = [];
    let missedPool = 0;
    const runOnce = async (taskId: string, file: string) => {
      const t1 = Date.now();
      const run = (await runs.startRun({ taskId, agentCommand: agent(file) })).run!;
      let got = (await runs.getRun({ runId: run.id })).run!;
      while (!got.cleanedAt) {
        await sleep(20);
        got = (await runs.getRun({ runId: run.id })).run!;
      }
      if (!existsSync(file)) throw new Error(`run ${run.id} ended ${got.status} without starting its agent: ${got.errorMessage}`);
      const p = got.phaseTimings.find((t) => t.phase === "provisioning")?.duration;
      return { ms: startedAt(file) - t1, provisioning: p ? (Number(p.seconds) + p.nanos / 1e9) * 1000 : 0, runId: run.id };
    };
    /** The claim's duration the provider logged ("took the warm runner … (N ms)"), or null on a miss. */
    const claimMs = async (runId: string) => {
      for await (const r of runs.streamLogs({ runId, follow: false })) {
        const took = r.entries.find((e) => e.text.startsWith("took the warm runner"));
        if (took) return Number(/\((\d+) ms\)$/.exec(took.text)?.[1] ?? 0);
      }
      return null;
    };
    const hitProvisioning: number[] = [];
    const claims: number[] = [];
    for (let i = 0; i <= rounds; i++) {
      // The pool's refill after the last hit is done before anything is timed (it would compete).
      for (let w = 0; w < 600 && readyMembers() < 1; w++) await sleep(20);
      // Bare: a worktree of the repository, then the agent in it.
      const file = join(marks, `bare-${i}`);
      const t0 = Date.now() + (performance.now() % 1);
      execSync(`git -C ${repo} worktree add --quiet --detach ${join(dir, `wt-${i}`)} HEAD`);
      await new Promise<void>((r) => spawn(agent(file)[0]!, agent(file).slice(1), { cwd: join(dir, `wt-${i}`), stdio: "ignore" }).once("exit", () => r()));
      const b = startedAt(file) - t0;

      const miss = await runOnce(task!.id, join(marks, `paddock-${i}`));
      const hit = await runOnce(warmTask!.id, join(marks, `warm-${i}`));
      const claim = await claimMs(hit.runId);
      if (claim === null) missedPool++;
      // The first round warms the repository's mirror and the page cache: not counted.
      if (i === 0) continue;
      bare.push(b);
      paddock.push(miss.ms);
      hits.push(hit.ms);
      hitProvisioning.push(hit.provisioning);
      if (claim !== null) claims.push(claim);
      if (miss.provisioning) provisioning.push(miss.provisioning);
    }
    const m = median(paddock);
    const h = median(hits);
    const b = median(bare);
    console.log(`local start: StartRun → agent started ${m.toFixed(1)} ms (of it provisioning ${median(provisioning).toFixed(1)} ms), bare git worktree add + spawn ${b.toFixed(1)} ms, ratio ${(m / b).toFixed(1)}× (aim ≤ 2×; ${rounds} rounds, alternating, medians)`);
    console.log(`local start, warm pool hit: StartRun → agent started ${h.toFixed(1)} ms (of it provisioning ${median(hitProvisioning).toFixed(1)} ms, the claim ${median(claims).toFixed(1)} ms), bare ${b.toFixed(1)} ms, ratio ${(h / b).toFixed(1)}× (aim ≤ 2×; ${rounds} rounds${missedPool ? `, ${missedPool} of ${rounds + 1} missed the pool` : ""})`);
  } finally {
    daemon.kill("SIGTERM");
    await new Promise((r) => daemon.once("exit", r));
    // With a docker engine on the machine, the daemon made its instance's network at start.
    await removeDockerBench(new (await import("dockerode")).default(), "local", dataDir).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The package (or src/ directory) a bundled input belongs to. */
function packageOf(input: string): string {
  const nm = input.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const [a, b] = input.slice(nm + "node_modules/".length).split("/");
    return a!.startsWith("@") ? `${a}/${b}` : a!;
  }
  const src = input.indexOf("src/");
  return src >= 0 ? input.slice(src).split("/").slice(0, 2).join("/") : input;
}

/**
 * Which modules each role loads, traced: the binary's chunks are built as plain files
 * (scripts/build-binary.ts --chunks), each role runs from them under strace, and the chunk
 * files it opened are mapped to the packages and src/ directories bundled in them.
 */
async function benchModules() {
  const { spawnSync } = await import("node:child_process");
  const bun = resolve(import.meta.dirname, "..", "node_modules", ".bin", "bun");
  const dir = tmp("modules");
  const chunks = join(dir, "chunks");
  const serveDir = join(dir, "serve");
  const daemonDir = join(dir, "daemon");
  execSync(`${bun} ${resolve(import.meta.dirname, "..", "scripts", "build-binary.ts")} --chunks ${chunks}`, { stdio: "ignore" });
  const meta = JSON.parse(readFileSync(join(chunks, "metafile.json"), "utf8")) as { outputs: Record<string, { bytes: number; inputs: Record<string, { bytesInOutput: number }> }> };
  const daemon = spawn(bun, [join(chunks, "main.js"), "serve", "--data-dir", daemonDir, "--listen", "127.0.0.1:0", "--log-format", "json"], { stdio: ["ignore", "ignore", "pipe"] });
  try {
    let err = "";
    daemon.stderr!.on("data", (d: Buffer) => (err += d));
    for (let i = 0; i < 400 && !err.includes("paddock listening"); i++) await sleep(50);
    const keys = await loadOrCreateSandboxKeys(dir);
    mkdirSync(join(dir, "work"));
    const runnerEnv = (kind: string) => ({
      PATH: process.env.PATH,
      PADDOCK_RUN_ID: "run_bench1",
      PADDOCK_RUNNER_HOST: "127.0.0.1",
      PADDOCK_RUNNER_PORT: "0",
      PADDOCK_WORKDIR: join(dir, "work"),
      PADDOCK_STATE_DIR: join(dir, `state-${kind}`),
      PADDOCK_RESULT_BRANCH: "paddock/run_bench1",
      PADDOCK_AGENT_COMMAND: JSON.stringify(["true"]),
      PADDOCK_AGENT_KIND: kind,
      PADDOCK_AGENT_HOME: join(dir, "home"),
      JWT_PUBLIC_KEY: keys.publicKeyPem,
    });
    // [role, argv, env, what it prints once up (long-running roles are then stopped)]
    const roles: [string, string[], NodeJS.ProcessEnv, string | null][] = [
      ["paddock --version", ["--version"], process.env, null],
      ["paddock run start --help", ["run", "start", "--help"], process.env, null],
      ["paddock task list (against a daemon)", ["task", "list"], { ...process.env, PADDOCK_DATA_DIR: daemonDir }, null],
      ["paddock agent (command runner, until it listens)", ["agent"], runnerEnv("command"), "listening on"],
      ["paddock agent (ACP runner, until it listens)", ["agent"], runnerEnv("acp"), "listening on"],
      ["paddock serve (idle)", ["serve", "--data-dir", serveDir, "--listen", "127.0.0.1:0", "--socket", "", "--log-format", "json"], process.env, "paddock listening"],
    ];
    // What the CLI and the runner must never load (issue 13), and two costly ones besides.
    const never = ["dockerode", "src/store", "src/api", "xstate", "@octokit/rest", "@octokit/auth-app", "modal", "zod", "@agentclientprotocol/sdk"];
    console.log("modules: chunks each role opens (ES modules in them run; CommonJS packages in them, e.g. ssh2 and gRPC, run only when first required)");
    for (const [label, args, env, ready] of roles) {
      const trace = join(dir, "trace.txt");
      const argv = ["-f", "-qq", "-e", "trace=openat", "-o", trace, bun, join(chunks, "main.js"), ...args];
      if (ready === null) spawnSync("strace", argv, { env, stdio: "ignore" });
      else {
        // Its own process group: the traced program and strace are stopped together.
        const child = spawn("strace", argv, { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
        let out = "";
        const up = new Promise<void>((r) => {
          const seen = (d: Buffer) => ((out += d), out.includes(ready) && r());
          child.stdout!.on("data", seen);
          child.stderr!.on("data", seen);
        });
        await Promise.race([up, sleep(20_000)]);
        await sleep(1000);
        const exited = new Promise((r) => child.once("exit", r));
        process.kill(-child.pid!, "SIGKILL");
        await exited;
      }
      const opened = new Set([...readFileSync(trace, "utf8").matchAll(/chunks\/([\w.-]+\.js)"/g)].map((m) => `./${m[1]}`));
      const sizes = new Map<string, number>();
      let bytes = 0;
      for (const chunk of opened) {
        const out = meta.outputs[chunk];
        if (!out) continue;
        bytes += out.bytes;
        for (const [input, { bytesInOutput }] of Object.entries(out.inputs)) sizes.set(packageOf(input), (sizes.get(packageOf(input)) ?? 0) + bytesInOutput);
      }
      const top = [...sizes].sort((a, b) => b[1] - a[1]).filter(([, n]) => n >= 4096);
      const loadedNever = never.filter((p) => sizes.has(p));
      console.log(`modules: ${label}: ${opened.size} chunks, ${fmt(bytes / 1024)} KiB: ${top.map(([p, n]) => `${p} ${fmt(n / 1024)}K`).join(", ")}`);
      console.log(`  of ${never.join(", ")}: ${loadedNever.length ? `loads ${loadedNever.join(", ")}` : "none"}`);
    }
  } finally {
    daemon.kill("SIGTERM");
    await new Promise((r) => daemon.once("exit", r));
    rmSync(dir, { recursive: true, force: true });
  }
}

const which = process.argv[2];
if (!which || which === "transitions") await benchTransitions();
if (!which || which === "replay") await benchReplay();
if (!which || which === "rss") await benchRss();
if (!which || which === "auth") await benchAuth();
if (!which || which === "proxy") await benchProxy();
if (!which || which === "broker") await benchBroker();
if (!which || which === "docker") await benchDocker();
if (!which || which === "pool") await benchPool();
if (!which || which === "modal") await benchModal();
if (!which || which === "flood") await benchFlood();
if (!which || which === "events") await benchEvents();
if (!which || which === "startup") await benchStartup();
if (!which || which === "restore") await benchRestore();
if (!which || which === "web") await benchWeb();
if (!which || which === "metrics") await benchMetrics();
if (!which || which === "queued") await benchQueued();
if (!which || which === "local") await benchLocal();
if (!which || which === "modules") await benchModules();
