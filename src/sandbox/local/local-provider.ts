import { spawn } from "node:child_process";
import { randomInt } from "node:crypto";
import { closeSync, existsSync, openSync, watch, writeFileSync } from "node:fs";
import { chmod, mkdir, readdir, readFile, rm, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { killAllOf, processesOf } from "../../agent/agent-user.js";
import { runnerEnvironment } from "../../agent/runner-env.js";
import { RUNNER_EVENTS_FILE, RUNNER_INFO_FILE, type RunnerInfo } from "../../agent/runner-protocol.js";
import { SandboxError } from "../../errors.js";
import { importHandoff } from "../import-handoff.js";
import { collectWork } from "../import-work.js";
import { runnerEnvOfRun, type CleanupResult, type SandboxProvider, type SandboxSpec, type SandboxStatus } from "../provider.js";
import type { GitCredentialSource } from "../git-credentials.js";
import { prepareSource } from "../repository-source.js";
import { createRunnerClient } from "../runner-client.js";

export interface LocalProviderOptions {
  /** Runner state lives in <root>/sandboxes/<name>/state, mirrors of remote repositories in <root>/repos. */
  root: string;
  /** Tokens for cloning private repositories on the daemon's git host (given to git alone, never the sandbox). */
  gitCredentials?: GitCredentialSource;
  /**
   * Uids for agents, one per run, when the daemon is root: the agent cannot read the data
   * dir, other runs or the runner's state, and every process it starts can be found and
   * killed by its uid. null: agents run as the daemon's own user.
   */
  agentUids: { first: number; count: number } | null;
  /** Where workspaces and agents' homes live when agents have their own uids: a tree they can traverse. */
  workRoot: string;
  /** argv that starts `paddock agent` (the binary itself, or node + main.ts in development). */
  runnerCommand: string[];
  /** Environment the runner starts from (PATH, HOME…); the agent sees only an allowlist of it. */
  baseEnv: Record<string, string | undefined>;
  /** How long the runner gives the agent between SIGTERM and SIGKILL. */
  graceMs: number;
  /** How long provisioning waits for a started runner to answer. */
  runnerStartTimeoutMs: number;
}

/** What provisioning remembers about a sandbox, for cleanup after a restart. */
interface SandboxRecord {
  runId: string;
  /** The git repository the work comes back to: the user's local repo or our mirror. */
  source: string;
  branch: string;
  resultBranch: string;
  agentCommand: string[];
  agent?: SandboxSpec["agent"];
  prompt: string;
  logBudget?: { maxBytes: number; maxLines: number };
  publicKeyPem: string;
  token: string;
  /** The agent's own uid and gid, or absent when it runs as the daemon's user. */
  agentUid?: number;
  handoff?: SandboxSpec["handoff"];
}

/**
 * The embedded default: a clone and a child process on this host. When the daemon is root
 * each run's agent has a uid of its own; the network policy is not enforced (the API says so
 * on the run). The work comes back as a bundle made by the runner, never by running git in
 * the agent's tree as the daemon.
 */
export class LocalProvider implements SandboxProvider {
  readonly name = "local";
  readonly enforcesNetworkPolicy = false;

  constructor(private readonly opts: LocalProviderOptions) {}

  private stateDir(name: string) {
    return join(this.opts.root, "sandboxes", name, "state");
  }

  private workDir(name: string) {
    return this.opts.agentUids ? join(this.opts.workRoot, name) : join(this.opts.root, "sandboxes", name);
  }

  /** Whether agents are kept from the daemon's data; said on every local run. */
  get isolatesAgents(): boolean {
    return this.opts.agentUids !== null;
  }

  async provision(spec: SandboxSpec, signal: AbortSignal, progress: (line: string) => void): Promise<SandboxStatus> {
    const state = this.stateDir(spec.name);
    await mkdir(state, { recursive: true, mode: 0o700 });
    await chmod(join(this.opts.root, "sandboxes"), 0o700);

    const found = await this.inspect(spec.name);
    if (found.state === "running") {
      progress(`re-attached to the running sandbox ${spec.name}`);
      return found;
    }
    if (existsSync(join(state, RUNNER_EVENTS_FILE))) {
      // The agent already ran here and its runner is gone: starting it again would run the agent twice.
      throw new SandboxError(`the runner of sandbox ${spec.name} exited before the daemon reattached`, false);
    }

    const source = await prepareSource(this.opts.root, spec.repositoryUrl, signal, progress, this.opts.gitCredentials);
    if (spec.handoff) await importHandoff(source, spec.runId, spec.handoff, signal);
    let record = await readRecord(state);
    if (!record) {
      record = {
        runId: spec.runId,
        source,
        branch: spec.branch,
        resultBranch: spec.resultBranch,
        agentCommand: spec.agentCommand,
        agent: spec.agent,
        prompt: spec.prompt,
        logBudget: spec.logBudget,
        publicKeyPem: spec.publicKeyPem,
        token: spec.token,
        agentUid: await this.allocateUid(),
        handoff: spec.handoff,
      };
      await writeFile(join(state, "sandbox.json"), JSON.stringify(record), { mode: 0o600 });
    }
    progress(
      record.agentUid !== undefined
        ? `the agent runs as uid ${record.agentUid}, with no access to the daemon's data`
        : "note: the daemon is not root, so the agent runs as the daemon's own user and can read its data dir",
    );

    // A runner started before a daemon crash may not have written runner.json yet: wait
    // for that one rather than start a second, which would run the agent twice.
    const started = await readPid(state);
    const ready = started === null || !alive(started) ? (await this.startRunner(spec.name, record)).ready : null;
    return this.waitForRunner(spec.name, record, signal, ready);
  }

  /** A uid of the range that no sandbox of ours holds and no process runs as. */
  private async allocateUid(): Promise<number | undefined> {
    const range = this.opts.agentUids;
    if (!range) return undefined;
    const taken = new Set<number>();
    for (const name of await this.list()) {
      const r = await readRecord(this.stateDir(name));
      if (r?.agentUid !== undefined) taken.add(r.agentUid);
    }
    for (let i = 0; i < 64; i++) {
      const uid = range.first + randomInt(range.count);
      if (!taken.has(uid) && (await processesOf(uid)).length === 0) return uid;
    }
    throw new SandboxError(`no free agent uid in ${range.first}-${range.first + range.count - 1}`, true);
  }

  /**
   * Spawns the runner; `ready` resolves to what it says on its ready pipe once it listens (null if
   * it exited first, e.g. its checkout failed). Only this daemon process holds the pipe: a
   * restarted daemon finds the runner through runner.json.
   */
  private async startRunner(name: string, record: SandboxRecord): Promise<{ ready: Promise<RunnerInfo | null> }> {
    const state = this.stateDir(name);
    const work = this.workDir(name);
    const uid = record.agentUid;
    if (uid !== undefined) {
      // Traversable (not listable) down to the workspace; the workspace and home are the agent's.
      await mkdir(this.opts.workRoot, { recursive: true, mode: 0o711 });
      await chmod(this.opts.workRoot, 0o711);
    }
    await mkdir(work, { recursive: true, mode: uid !== undefined ? 0o711 : 0o700 });
    // A dead runner's runner.json would pass for the new one's until it writes its own.
    await rm(join(state, RUNNER_INFO_FILE), { force: true });
    const [file, ...args] = this.opts.runnerCommand;
    const logFd = openSync(join(state, "runner.log"), "a", 0o600);
    try {
      const child = spawn(file!, args, {
        cwd: state,
        detached: true, // own process group: survives a daemon SIGKILL, killable as a group
        stdio: ["ignore", logFd, logFd, "pipe"],
        env: {
          ...this.opts.baseEnv,
          ...runnerEnvironment({
            ...runnerEnvOfRun(record),
            PADDOCK_RUNNER_HOST: "127.0.0.1",
            PADDOCK_RUNNER_PORT: 0,
            PADDOCK_WORKDIR: join(work, "workspace"),
            PADDOCK_STATE_DIR: state,
            PADDOCK_SOURCE: record.source,
            PADDOCK_GRACE_MS: this.opts.graceMs,
            PADDOCK_AGENT_UID: uid,
            PADDOCK_AGENT_GID: uid,
            PADDOCK_AGENT_HOME: join(work, "home"),
            PADDOCK_AGENT_PATH: this.opts.baseEnv.PATH ?? "/usr/local/bin:/usr/bin:/bin",
            PADDOCK_READY_FD: 3,
          }),
        },
      });
      child.on("error", () => {}); // surfaces below as a runner that never answers
      child.unref();
      if (child.pid) writeFileSync(join(state, RUNNER_PID_FILE), String(child.pid), { mode: 0o600 });
      return { ready: readyLine(child.stdio[3] as Readable | null) };
    } finally {
      closeSync(logFd);
    }
  }

  /**
   * Until the runner answers for the run. One this process spawned says so on its ready
   * pipe (`ready`): no poll, no health call (the pid is our child's, the run its record's).
   * One started by an earlier daemon process is found through runner.json and /health.
   */
  private async waitForRunner(name: string, record: SandboxRecord, signal: AbortSignal, ready: Promise<RunnerInfo | null> | null = null): Promise<SandboxStatus> {
    const state = this.stateDir(name);
    let last = "no runner.json yet";
    if (ready) {
      const timeout = AbortSignal.any([signal, AbortSignal.timeout(this.opts.runnerStartTimeoutMs)]);
      const info = await Promise.race([ready, new Promise<null>((resolve) => timeout.addEventListener("abort", () => resolve(null), { once: true }))]);
      if (info) return { state: "running", endpoint: `http://127.0.0.1:${info.port}` };
      return this.runnerFailed(state, signal, "the runner exited before it listened");
    }
    const until = Date.now() + this.opts.runnerStartTimeoutMs;
    // The runner writes runner.json once it listens: its appearance wakes the loop at once;
    // the 20 ms poll stays for what a watch can miss (and for a runner that died).
    let wake = () => {};
    let watcher: ReturnType<typeof watch> | null = null;
    try {
      watcher = watch(state, (_, file) => (file === null || file === RUNNER_INFO_FILE) && wake());
      watcher.on("error", () => undefined);
    } catch {
      // no watch on this file system: the poll alone
    }
    try {
      while (Date.now() < until) {
        signal.throwIfAborted();
        const info = await readInfo(state);
        const pid = info?.pid ?? (await readPid(state));
        if (pid !== null && !alive(pid)) break;
        if (info) {
          const endpoint = `http://127.0.0.1:${info.port}`;
          try {
            const health = await createRunnerClient(endpoint, record.token).health(signal);
            if (health.runId === record.runId) return { state: "running", endpoint };
            last = `runner answered for ${health.runId}`;
          } catch (error) {
            last = (error as Error).message;
          }
        }
        const tick = new AbortController();
        await Promise.race([sleep(20, undefined, { signal: AbortSignal.any([signal, tick.signal]) }).catch(() => undefined), new Promise<void>((r) => (wake = r))]);
        tick.abort();
      }
    } finally {
      watcher?.close();
    }
    return this.runnerFailed(state, signal, last);
  }

  /** Why a runner did not come up, from its log. */
  private async runnerFailed(state: string, signal: AbortSignal, last: string): Promise<never> {
    signal.throwIfAborted();
    const log = await readFile(join(state, "runner.log"), "utf8").catch(() => "");
    const checkout = /paddock agent: checkout failed: (.*)$/m.exec(log);
    if (checkout) throw new SandboxError(checkout[1]!, false);
    const tail = log.trim().split("\n").slice(-5).join(" | ");
    throw new SandboxError(`runner did not start (${last})${tail ? `: ${tail}` : ""}`, false);
  }

  async inspect(name: string): Promise<SandboxStatus> {
    const state = this.stateDir(name);
    if (!existsSync(state)) return { state: "missing" };
    const info = await readInfo(state);
    if (!info || !alive(info.pid)) return { state: "stopped" };
    return { state: "running", endpoint: `http://127.0.0.1:${info.port}` };
  }

  async revive(name: string, _runId: string, signal: AbortSignal): Promise<string | null> {
    const record = await readRecord(this.stateDir(name));
    if (!record) return null;
    const status = await this.inspect(name);
    if (status.endpoint) return status.endpoint;
    if (!existsSync(join(this.stateDir(name), RUNNER_EVENTS_FILE))) return null;
    const { ready } = await this.startRunner(name, record);
    return (await this.waitForRunner(name, record, signal, ready)).endpoint ?? null;
  }

  async destroy(name: string, signal: AbortSignal): Promise<CleanupResult> {
    const state = this.stateDir(name);
    if (!existsSync(join(this.opts.root, "sandboxes", name))) return {};
    const record = await readRecord(state);
    const result: CleanupResult = {};
    if (record && existsSync(join(this.workDir(name), "workspace", ".git"))) {
      let status = await this.inspect(name);
      if (status.state !== "running") {
        // The runner is gone: a new one, which never runs the agent again, makes the export.
        const { ready } = await this.startRunner(name, record);
        status = await this.waitForRunner(name, record, signal, ready).catch(() => status);
      }
      if (status.endpoint) {
        const runner = createRunnerClient(status.endpoint, record.token);
        const timeout = AbortSignal.any([signal, AbortSignal.timeout(this.opts.graceMs + 60_000)]);
        try {
          Object.assign(result, await collectWork(runner, { source: record.source, resultBranch: record.resultBranch, signal, timeout }));
        } catch (error) {
          if (signal.aborted) throw error;
          result.notes = [`the agent's work could not be taken out: ${(error as Error).message}`];
        }
        await runner.shutdown(AbortSignal.any([signal, AbortSignal.timeout(this.opts.graceMs + 5_000)])).catch(() => undefined);
      }
    }
    const info = await readInfo(state);
    if (info) await killGroup(info.pid, this.opts.graceMs);
    if (info?.agentPid) await killGroup(info.agentPid, 0);
    const pid = await readPid(state);
    if (pid !== null && alive(pid)) await killGroup(pid, 0);
    if (record?.agentUid !== undefined) await killAllOf({ uid: record.agentUid, gid: record.agentUid });

    if (this.opts.agentUids) {
      await rm(this.workDir(name), { recursive: true, force: true });
      // The instance's tree goes with its last sandbox (rmdir refuses while others live in it;
      // a provisioning racing this makes it again).
      await rmdir(this.opts.workRoot).catch(() => undefined);
    }
    await rm(join(this.opts.root, "sandboxes", name), { recursive: true, force: true });
    return result;
  }

  async list(): Promise<string[]> {
    const names = await readdir(join(this.opts.root, "sandboxes")).catch(() => [] as string[]);
    return names.filter((n) => n.startsWith("paddock-"));
  }
}

/** The first line on a runner's ready pipe, or null at its end without one. */
function readyLine(pipe: Readable | null): Promise<RunnerInfo | null> {
  if (!pipe) return Promise.resolve(null);
  return new Promise((resolve) => {
    let text = "";
    const done = (info: RunnerInfo | null) => {
      pipe.destroy();
      resolve(info);
    };
    pipe.setEncoding("utf8");
    pipe.on("data", (chunk: string) => {
      text += chunk;
      const nl = text.indexOf("\n");
      if (nl < 0) return;
      try {
        done(JSON.parse(text.slice(0, nl)) as RunnerInfo);
      } catch {
        done(null);
      }
    });
    pipe.once("end", () => done(null));
    pipe.once("error", () => done(null));
  });
}

/** The runner's pid as the provider saw it at spawn, before the runner could say anything. */
const RUNNER_PID_FILE = "runner.pid";

async function readRecord(state: string): Promise<SandboxRecord | null> {
  try {
    return JSON.parse(await readFile(join(state, "sandbox.json"), "utf8")) as SandboxRecord;
  } catch {
    return null;
  }
}

async function readPid(state: string): Promise<number | null> {
  const text = await readFile(join(state, RUNNER_PID_FILE), "utf8").catch(() => "");
  const pid = Number(text);
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

async function readInfo(state: string): Promise<RunnerInfo | null> {
  try {
    return JSON.parse(await readFile(join(state, RUNNER_INFO_FILE), "utf8")) as RunnerInfo;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** SIGTERM the process group, wait up to graceMs, then SIGKILL it. */
async function killGroup(pid: number, graceMs: number): Promise<void> {
  const signalGroup = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pid, sig);
    } catch {
      /* gone */
    }
  };
  if (graceMs > 0 && alive(pid)) {
    signalGroup("SIGTERM");
    const until = Date.now() + graceMs;
    while (alive(pid) && Date.now() < until) await sleep(25);
  }
  signalGroup("SIGKILL");
  const until = Date.now() + 2_000;
  while (alive(pid) && Date.now() < until) await sleep(10);
}
