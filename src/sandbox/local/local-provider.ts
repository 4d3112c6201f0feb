import { spawn } from "node:child_process";
import { randomInt } from "node:crypto";
import { createHash } from "node:crypto";
import { closeSync, existsSync, openSync, readFileSync, watch, writeFileSync } from "node:fs";
import { chmod, mkdir, readdir, readFile, readlink, rm, rmdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { killAllOf, processesOf } from "../../agent/agent-user.js";
import { runnerEnvironment, type RunnerEnv } from "../../agent/runner-env.js";
import { claimSecretHash, RUNNER_EVENTS_FILE, RUNNER_INFO_FILE, type RunnerInfo } from "../../agent/runner-protocol.js";
import { SandboxError } from "../../errors.js";
import { importHandoff } from "../import-handoff.js";
import { collectWork } from "../import-work.js";
import { runnerEnvOfRun, type CleanupResult, type SandboxProvider, type SandboxSpec, type SandboxStatus } from "../provider.js";
import type { GitCredentialSource } from "../git-credentials.js";
import { prepareSource } from "../repository-source.js";
import { createRunnerClient } from "../runner-client.js";
import { WarmPool, type PoolMember } from "../warm-pool.js";
import type { PoolSpec } from "../docker/docker-provider.js";

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
  /** What the operator may want to follow (the warm pool's members). */
  warn?: (message: string, error?: unknown) => void;
}

/** How a local pool member is made: the repository's copy its workspace is prepared from. */
interface LocalRecipe {
  source: string;
}

/** What a pool member's state holds before its claim: nothing of a run. */
interface MemberRecord {
  key: string;
  agentUid?: number;
}

/** A pool member's record, in its state dir until a claim makes it the run's (sandbox.json). */
const MEMBER_FILE = "pool.json";

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
  /** A claimed pool member: the directory that holds this sandbox (its name is a link to it). */
  member?: string;
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

  /**
   * Runners started ahead per (environment, repository) that asks for it (warm_pool), each
   * with its workspace prepared and nothing of a run; a claim hands the run over.
   */
  readonly pool: WarmPool<LocalRecipe>;
  readonly brokersSecrets = false;

  constructor(private readonly opts: LocalProviderOptions) {
    this.pool = new WarmPool<LocalRecipe>({
      size: 0, // only environments ask for local members (warm_pool)
      make: (key, recipe, name, secret) => this.makeMember(key, recipe, name, secret),
      recipeId: (r) => r.source,
      discard: async (name) => void (await this.destroy(name, AbortSignal.timeout(60_000))),
      log: (message, error) => opts.warn?.(error ? `${message}: ${(error as Error).message}` : message),
    });
  }

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
    const key = poolKey(spec.environmentId ?? "", source);
    if (!record && spec.warmPool && !spec.handoff) {
      this.pool.noteEnvironment(spec.environmentId, key);
      this.pool.want(key, { source }, spec.warmPool);
      const warm = await this.fromPool(spec, key, source, signal, progress);
      if (warm) return warm;
      this.pool.refill(key);
    }
    // Made after the pool had its chance: a hit's sandbox is the member's directory.
    await mkdir(state, { recursive: true, mode: 0o700 });
    await chmod(join(this.opts.root, "sandboxes"), 0o700);
    if (!record) {
      record = recordOf(spec, source, { agentUid: await this.allocateUid(), handoff: spec.handoff });
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

  /**
   * A pool hit: a ready member of the key becomes the run's sandbox. The run's record goes
   * into the member's state and the run's sandbox name becomes a link to the member before
   * the claim (after a crash, cleanup finds the work through it); the claim then hands the
   * runner the run's variables, and its checkout needs no git process when the branch has
   * not moved since the member prepared the workspace. A member that cannot be taken is
   * removed and null returned: the run starts cold.
   */
  private async fromPool(spec: SandboxSpec, key: string, source: string, signal: AbortSignal, progress: (line: string) => void): Promise<SandboxStatus | null> {
    const member = this.pool.take(key);
    if (!member) {
      progress("warm pool: no ready runner for this repository");
      return null;
    }
    const link = join(this.opts.root, "sandboxes", spec.name);
    try {
      const t0 = Date.now();
      const memberState = this.stateDir(member.name);
      const own = await readMember(memberState);
      const record = recordOf(spec, source, { agentUid: own?.agentUid, member: member.name });
      await writeFile(join(memberState, "sandbox.json"), JSON.stringify(record), { mode: 0o600 });
      // A directory left here holds no record, so no runner (an earlier attempt that stopped short).
      await rm(link, { recursive: true, force: true });
      await symlink(member.name, link);
      await createRunnerClient(member.endpoint, member.secret).claim({ env: runnerEnvironment(runnerEnvOfRun(spec) as RunnerEnv) }, signal);
      const info = await readInfo(memberState);
      if (!info) throw new SandboxError("the claimed runner wrote no runner.json", false);
      progress(`took the warm runner ${member.name} as ${spec.name} (${Date.now() - t0} ms)`);
      progress(
        record.agentUid !== undefined
          ? `the agent runs as uid ${record.agentUid}, with no access to the daemon's data`
          : "note: the daemon is not root, so the agent runs as the daemon's own user and can read its data dir",
      );
      return { state: "running", endpoint: `http://127.0.0.1:${info.port}` };
    } catch (error) {
      progress(`warm runner ${member.name} could not be taken (${(error as Error).message}); starting cold`);
      await rm(link, { force: true }).catch(() => undefined);
      await this.destroyMember(member.name);
      if (signal.aborted) throw error;
      return null;
    } finally {
      this.pool.handedOver(member);
    }
  }

  /**
   * Starts `size` pool members for runs of `spec`'s environment and repository ahead of any
   * run, in the background (an environment with warm_pool, for each of its repositories).
   */
  async prewarm(spec: PoolSpec, size: number): Promise<void> {
    if (size <= 0) return;
    const source = await prepareSource(this.opts.root, spec.repositoryUrl, new AbortController().signal, () => undefined, this.opts.gitCredentials);
    const key = poolKey(spec.environmentId ?? "", source);
    this.pool.noteEnvironment(spec.environmentId, key);
    this.pool.want(key, { source }, size);
    this.pool.refill(key);
  }

  /** An environment's warm_pool changed (null: it was deleted): its keys keep that many members. */
  resizeEnvironmentPool(environmentId: string, size: number | null): void {
    this.pool.resizeEnvironment(environmentId, size);
  }


  /**
   * A pool member: a runner with no run (no token, secrets, prompt or agent) that prepares
   * the workspace from the key's source, then waits for its claim on a port it says on its
   * ready pipe. Removed again when it does not come up.
   */
  private async makeMember(key: string, recipe: LocalRecipe, name: string, secret: string): Promise<Omit<PoolMember, "recipe">> {
    const state = this.stateDir(name);
    try {
      await mkdir(state, { recursive: true, mode: 0o700 });
      await chmod(join(this.opts.root, "sandboxes"), 0o700);
      const agentUid = await this.allocateUid();
      const member: MemberRecord = { key, agentUid };
      await writeFile(join(state, MEMBER_FILE), JSON.stringify(member), { mode: 0o600 });
      const { ready } = await this.spawnRunner(name, agentUid, recipe.source, { PADDOCK_POOL_CLAIM: claimSecretHash(secret) });
      const info = await Promise.race([ready, new Promise<null>((r) => setTimeout(() => r(null), this.opts.runnerStartTimeoutMs).unref())]);
      if (!info) await this.runnerFailed(state, new AbortController().signal, "the pool runner did not say it listens");
      return { name, id: name, key, secret, endpoint: `http://127.0.0.1:${info!.port}` };
    } catch (error) {
      await this.destroyMember(name);
      throw error;
    }
  }

  private async destroyMember(name: string): Promise<void> {
    await this.destroy(name, AbortSignal.timeout(60_000)).catch((error: unknown) => this.opts.warn?.(`warm runner ${name} could not be removed: ${(error as Error).message}`));
  }

  /** Stops filling the pool and removes its unclaimed members (daemon shutdown). */
  async close(): Promise<void> {
    await this.pool.close();
  }

  /** A uid of the range that no sandbox of ours holds and no process runs as. */
  private async allocateUid(): Promise<number | undefined> {
    const range = this.opts.agentUids;
    if (!range) return undefined;
    const taken = new Set<number>();
    const names = await readdir(join(this.opts.root, "sandboxes")).catch(() => [] as string[]);
    for (const name of names) {
      const r = (await readRecord(this.stateDir(name))) ?? (await readMember(this.stateDir(name)));
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
  private startRunner(name: string, record: SandboxRecord): Promise<{ ready: Promise<RunnerInfo | null> }> {
    return this.spawnRunner(record.member ?? name, record.agentUid, record.source, runnerEnvOfRun(record));
  }

  /** Spawns `paddock agent` for the sandbox directory `dir`: a run's (its variables in `vars`) or a pool member's. */
  private async spawnRunner(dir: string, uid: number | undefined, source: string, vars: Partial<RunnerEnv>): Promise<{ ready: Promise<RunnerInfo | null> }> {
    const state = this.stateDir(dir);
    const work = this.workDir(dir);
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
            ...vars,
            PADDOCK_RUNNER_HOST: "127.0.0.1",
            PADDOCK_RUNNER_PORT: 0,
            PADDOCK_WORKDIR: join(work, "workspace"),
            PADDOCK_STATE_DIR: state,
            PADDOCK_SOURCE: source,
            PADDOCK_GRACE_MS: this.opts.graceMs,
            PADDOCK_AGENT_UID: uid,
            PADDOCK_AGENT_GID: uid,
            PADDOCK_AGENT_HOME: join(work, "home"),
            PADDOCK_AGENT_PATH: this.opts.baseEnv.PATH ?? "/usr/local/bin:/usr/bin:/bin",
            PADDOCK_READY_FD: 3,
          } as RunnerEnv),
        },
      });
      child.on("error", () => {}); // surfaces below as a runner that never answers
      child.unref();
      // With the process's start time: a pid the kernel gave to another process since is not ours.
      if (child.pid) writeFileSync(join(state, RUNNER_PID_FILE), `${child.pid} ${processStart(child.pid) ?? ""}`.trim(), { mode: 0o600 });
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
    if (!existsSync(join(this.opts.root, "sandboxes", name))) {
      // A claimed member's link may be gone with its target still there: nothing of ours to find by this name.
      await rm(join(this.opts.root, "sandboxes", name), { force: true });
      return {};
    }
    const record = await readRecord(state);
    const dir = record?.member ?? name;
    const agentUid = record ? record.agentUid : (await readMember(state))?.agentUid;
    const result: CleanupResult = {};
    if (record && existsSync(join(this.workDir(dir), "workspace", ".git"))) {
      let status = await this.inspect(name);
      if (status.state !== "running") {
        // The runner is gone: a new one, which never runs the agent again, makes the export.
        // One still starting (a provisioning cut short: the deadline, a cancel) is waited for
        // instead; a second would overwrite its pid and leave it running.
        const starting = await readPid(state);
        const ready = starting !== null && alive(starting) ? null : (await this.startRunner(name, record)).ready;
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
    if (agentUid !== undefined) await killAllOf({ uid: agentUid, gid: agentUid });

    if (this.opts.agentUids) {
      await rm(this.workDir(dir), { recursive: true, force: true });
      // The instance's tree goes with its last sandbox (rmdir refuses while others live in it;
      // a provisioning racing this makes it again).
      await rmdir(this.opts.workRoot).catch(() => undefined);
    }
    await rm(join(this.opts.root, "sandboxes", dir), { recursive: true, force: true });
    await rm(join(this.opts.root, "sandboxes", name), { recursive: true, force: true });
    return result;
  }

  /**
   * This instance's sandboxes by name: runs' (a claimed member by its run's name, the link),
   * and pool members this daemon process did not make (an earlier one's: orphans now).
   */
  async list(): Promise<string[]> {
    const root = join(this.opts.root, "sandboxes");
    const entries = await readdir(root, { withFileTypes: true }).catch(() => []);
    const claimed = new Set<string>();
    for (const e of entries) if (e.isSymbolicLink()) claimed.add(await readlink(join(root, e.name)).catch(() => ""));
    return entries.map((e) => e.name).filter((n) => n.startsWith("paddock-") && !claimed.has(n) && !this.pool.owns(n));
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

/** The runner's pid while it is the process that was spawned (its start time matches), else null. */
async function readPid(state: string): Promise<number | null> {
  const [text = "", start] = (await readFile(join(state, RUNNER_PID_FILE), "utf8").catch(() => "")).split(" ");
  const pid = Number(text);
  if (!Number.isInteger(pid) || pid <= 0) return null;
  if (start !== undefined) {
    const now = processStart(pid);
    if (now !== null && now !== start) return null; // another process has that pid now
  }
  return pid;
}

async function readMember(state: string): Promise<MemberRecord | null> {
  try {
    return JSON.parse(await readFile(join(state, MEMBER_FILE), "utf8")) as MemberRecord;
  } catch {
    return null;
  }
}

/** When the process started (clock ticks since boot, /proc/<pid>/stat field 22); null where unknown. */
function processStart(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null;
  } catch {
    return null;
  }
}

/** A local pool key: members serve one environment's runs of one repository. */
function poolKey(environmentId: string, source: string): string {
  return createHash("sha256").update(`${environmentId}\0${source}`).digest("hex").slice(0, 16);
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

/** What a sandbox's record keeps of its run: what its runner is started with, and whose it is. */
function recordOf(spec: SandboxSpec, source: string, own: Partial<SandboxRecord>): SandboxRecord {
  return {
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
    ...own,
  };
}
