import { spawn } from "node:child_process";
import { randomInt } from "node:crypto";
import { createHash } from "node:crypto";
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, watch, writeFileSync } from "node:fs";
import { chmod, mkdir, readdir, readFile, readlink, rename, rm, rmdir, symlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Readable, Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { killAllOf, processesOf } from "../../agent/agent-user.js";
import { runnerEnvironment, type RunnerEnv } from "../../agent/runner-env.js";
import { claimSecretHash, RUNNER_EVENTS_FILE, RUNNER_INFO_FILE, type RunnerInfo } from "../../agent/runner-protocol.js";
import { cloneArgs, sandboxGit } from "../../agent/sandbox-git.js";
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
  /**
   * A uid checked free (held by no sandbox, no process running as it) ahead of the next
   * sandbox, so that the /proc scan — the slow part of allocating one — is not on a run's
   * way to its agent. Nothing starts as an unheld uid, so the check holds until it is taken.
   */
  private spareUid: Promise<number> | null = null;
  /** Clones of workspaces this process is making for runners that start meanwhile, by sandbox directory; `stop` kills git. */
  private readonly clones = new Map<string, { done: Promise<string>; stop: AbortController }>();

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
    let record = readRecord(state);
    const key = poolKey(spec.environmentId ?? "", source);
    if (!record && spec.warmPool && !spec.handoff) {
      this.pool.noteEnvironment(spec.environmentId, key);
      this.pool.want(key, { source }, spec.warmPool);
      const warm = await this.fromPool(spec, key, source, signal, progress);
      if (warm) return warm;
      this.pool.refill(key);
    }
    // Made after the pool had its chance: a hit's sandbox is the member's directory. From
    // here to the runner's spawn nothing waits on I/O (small files, written at once; a uid
    // checked free ahead of this run).
    mkdirSync(state, { recursive: true, mode: 0o700 });
    chmodSync(join(this.opts.root, "sandboxes"), 0o700);
    // A sandbox new to this provision gets its workspace cloned while its runner starts.
    const fresh = !record;
    if (!record) {
      let made: SandboxRecord | undefined;
      await this.allocateUid((agentUid) => {
        made = recordOf(spec, source, { agentUid, handoff: spec.handoff });
        writeFileSync(join(state, "sandbox.json"), JSON.stringify(made), { mode: 0o600 });
      });
      record = made!;
    }
    progress(
      record.agentUid !== undefined
        ? `the agent runs as uid ${record.agentUid}, with no access to the daemon's data`
        : "note: the daemon is not root, so the agent runs as the daemon's own user and can read its data dir",
    );

    // A runner started before a daemon crash may not have written runner.json yet: wait
    // for that one rather than start a second, which would run the agent twice. One that
    // ended without listening and without events (its checkout waited for the clone of the
    // daemon that died) ran no agent: a new one starts, and clones for itself.
    const started = readPid(state);
    if (started !== null && alive(started)) {
      const earlier = await this.waitForRunner(spec.name, record, signal).catch((error: unknown) => {
        if (signal.aborted || alive(started) || existsSync(join(state, RUNNER_EVENTS_FILE))) throw error;
        return null;
      });
      if (earlier) return earlier;
      progress("the runner an earlier daemon started ended before it started the agent; starting another");
    }
    const { ready } = await this.startRunner(spec.name, record, { clone: fresh && !spec.handoff });
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
      const own = readMember(memberState);
      const record = recordOf(spec, source, { agentUid: own?.agentUid, member: member.name });
      await writeFile(join(memberState, "sandbox.json"), JSON.stringify(record), { mode: 0o600 });
      // A directory left here holds no record, so no runner (an earlier attempt that stopped short).
      await rm(link, { recursive: true, force: true });
      await symlink(member.name, link);
      await createRunnerClient(member.endpoint, member.secret).claim({ env: runnerEnvironment(runnerEnvOfRun(spec) as RunnerEnv) }, signal);
      const info = readInfo(memberState);
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
      const agentUid = await this.allocateUid((uid) => writeFileSync(join(state, MEMBER_FILE), JSON.stringify({ key, agentUid: uid } satisfies MemberRecord), { mode: 0o600 }));
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

  /**
   * A uid of the range for a new sandbox (undefined when agents run as the daemon's user),
   * held from the moment `record` writes it into the sandbox's record: found and recorded
   * in one turn of the event loop, so no other allocation can take it. Usually the spare,
   * checked free while no run waited; the next spare is then checked in the background.
   */
  private async allocateUid(record: (uid: number | undefined) => void): Promise<number | undefined> {
    if (!this.opts.agentUids) {
      record(undefined);
      return undefined;
    }
    const spare = this.spareUid;
    this.spareUid = null;
    let uid = await spare?.catch(() => undefined);
    // Recorded since it was checked (by a concurrent allocation): another is looked for.
    while (uid === undefined || this.heldUids().has(uid)) uid = await this.freeUid();
    record(uid);
    this.spareUid = this.freeUid();
    this.spareUid.catch(() => undefined); // a failure surfaces at the next allocation, which looks again
    return uid;
  }

  /** A uid of the range that no sandbox of ours holds and no process runs as (a scan of /proc). */
  private async freeUid(): Promise<number> {
    const range = this.opts.agentUids!;
    const held = this.heldUids();
    for (let i = 0; i < 64; i++) {
      const uid = range.first + randomInt(range.count);
      if (!held.has(uid) && (await processesOf(uid)).length === 0) return uid;
    }
    throw new SandboxError(`no free agent uid in ${range.first}-${range.first + range.count - 1}`, true);
  }

  /** The uids our sandboxes' records and pool members' hold. */
  private heldUids(): Set<number> {
    const held = new Set<number>();
    let names: string[] = [];
    try {
      names = readdirSync(join(this.opts.root, "sandboxes"));
    } catch {
      /* none yet */
    }
    for (const name of names) {
      const r = readRecord(this.stateDir(name)) ?? readMember(this.stateDir(name));
      if (r?.agentUid !== undefined) held.add(r.agentUid);
    }
    return held;
  }

  /**
   * Spawns the runner; `ready` resolves to what it says on its ready pipe once it listens (null if
   * it exited first, e.g. its checkout failed). Only this daemon process holds the pipe: a
   * restarted daemon finds the runner through runner.json.
   */
  private startRunner(name: string, record: SandboxRecord, opts: { clone?: boolean } = {}): Promise<{ ready: Promise<RunnerInfo | null> }> {
    return this.spawnRunner(record.member ?? name, record.agentUid, record.source, runnerEnvOfRun(record), opts);
  }

  /**
   * Spawns `paddock agent` for the sandbox directory `dir`: a run's (its variables in `vars`)
   * or a pool member's. With `clone`, a workspace not there yet is cloned by this process
   * while the runner starts (the two overlap), and the runner told on a pipe when it is whole.
   */
  private async spawnRunner(dir: string, uid: number | undefined, source: string, vars: Partial<RunnerEnv>, opts: { clone?: boolean } = {}): Promise<{ ready: Promise<RunnerInfo | null> }> {
    const state = this.stateDir(dir);
    const work = this.workDir(dir);
    if (uid !== undefined) {
      // Traversable (not listable) down to the workspace; the workspace and home are the agent's.
      mkdirSync(this.opts.workRoot, { recursive: true, mode: 0o711 });
      chmodSync(this.opts.workRoot, 0o711);
    }
    mkdirSync(work, { recursive: true, mode: uid !== undefined ? 0o711 : 0o700 });
    // A dead runner's runner.json would pass for the new one's until it writes its own.
    rmSync(join(state, RUNNER_INFO_FILE), { force: true });
    const workspace = join(work, "workspace");
    const clone = opts.clone && !existsSync(workspace) ? this.cloneWorkspace(dir, source, workspace, join(work, "home")) : null;
    const [file, ...args] = this.opts.runnerCommand;
    const logFd = openSync(join(state, "runner.log"), "a", 0o600);
    try {
      const child = spawn(file!, args, {
        cwd: state,
        detached: true, // own process group: survives a daemon SIGKILL, killable as a group
        stdio: ["ignore", logFd, logFd, "pipe", ...(clone ? (["pipe"] as const) : [])],
        env: {
          ...this.opts.baseEnv,
          ...runnerEnvironment({
            ...vars,
            PADDOCK_RUNNER_HOST: "127.0.0.1",
            PADDOCK_RUNNER_PORT: 0,
            PADDOCK_WORKDIR: workspace,
            PADDOCK_STATE_DIR: state,
            PADDOCK_SOURCE: source,
            PADDOCK_GRACE_MS: this.opts.graceMs,
            PADDOCK_AGENT_UID: uid,
            PADDOCK_AGENT_GID: uid,
            PADDOCK_AGENT_HOME: join(work, "home"),
            PADDOCK_AGENT_PATH: this.opts.baseEnv.PATH ?? "/usr/local/bin:/usr/bin:/bin",
            PADDOCK_READY_FD: 3,
            PADDOCK_CLONED_FD: clone ? 4 : undefined,
          } as RunnerEnv),
        },
      });
      child.on("error", () => {}); // surfaces below as a runner that never answers
      child.unref();
      if (clone) tellRunner(child.stdio[4] as Writable | null, clone);
      // With the process's start time: a pid the kernel gave to another process since is not ours.
      if (child.pid) writeFileSync(join(state, RUNNER_PID_FILE), `${child.pid} ${processStart(child.pid) ?? ""}`.trim(), { mode: 0o600 });
      return { ready: readyLine(child.stdio[3] as Readable | null) };
    } finally {
      closeSync(logFd);
    }
  }

  /**
   * A new sandbox's workspace, cloned from the source (no work tree: the runner checks out
   * as the agent's user) into a directory beside it and renamed once whole, so a daemon
   * that dies mid-clone leaves no half repository where the workspace goes. Nothing of the
   * run's is in the sandbox yet: no runner has run, no agent. Resolves to what the runner
   * is told: "ok", or git's reason.
   */
  private cloneWorkspace(dir: string, source: string, workspace: string, home: string): Promise<string> {
    const partial = `${workspace}.cloning`;
    const stop = new AbortController();
    const cloned = sandboxGit(cloneArgs(source, partial, { noCheckout: true }), { cwd: dirname(workspace), user: null, home, signal: stop.signal })
      .then(() => rename(partial, workspace))
      .then(
        () => "ok",
        (error: Error) => error.message,
      )
      .finally(() => this.clones.delete(dir));
    this.clones.set(dir, { done: cloned, stop });
    return cloned;
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
        const info = readInfo(state);
        const pid = info?.pid ?? readPid(state);
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
    const info = readInfo(state);
    if (!info || !alive(info.pid)) return { state: "stopped" };
    return { state: "running", endpoint: `http://127.0.0.1:${info.port}` };
  }

  async revive(name: string, _runId: string, signal: AbortSignal): Promise<string | null> {
    const record = readRecord(this.stateDir(name));
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
    const record = readRecord(state);
    const dir = record?.member ?? name;
    const agentUid = record ? record.agentUid : readMember(state)?.agentUid;
    const result: CleanupResult = {};
    if (record && existsSync(join(this.workDir(dir), "workspace", ".git"))) {
      let status = await this.inspect(name);
      if (status.state !== "running") {
        // The runner is gone: a new one, which never runs the agent again, makes the export.
        // One still starting (a provisioning cut short: the deadline, a cancel) is waited for
        // instead; a second would overwrite its pid and leave it running.
        const starting = readPid(state);
        const ready = starting !== null && alive(starting) ? null : (await this.startRunner(name, record)).ready;
        status = await this.waitForRunner(name, record, signal, ready).catch(() => status);
      }
      if (status.endpoint) {
        const runner = createRunnerClient(status.endpoint, record.token);
        const timeout = AbortSignal.any([signal, AbortSignal.timeout(this.opts.graceMs + 60_000)]);
        try {
          Object.assign(result, await collectWork(runner, { source: record.source, resultBranch: record.resultBranch, scratch: join(this.opts.root, "cleanup", name), signal, timeout }));
        } catch (error) {
          if (signal.aborted) throw error;
          result.notes = [`the agent's work could not be taken out: ${(error as Error).message}`];
        }
        await runner.shutdown(AbortSignal.any([signal, AbortSignal.timeout(this.opts.graceMs + 5_000)])).catch(() => undefined);
      }
    }
    const info = readInfo(state);
    if (info) await killGroup(info.pid, this.opts.graceMs);
    // A clone still under way is for a runner that is gone now: git stops (it would race the removal below).
    const clone = this.clones.get(dir);
    clone?.stop.abort();
    await clone?.done;
    if (info?.agentPid) await killGroup(info.agentPid, 0);
    const pid = readPid(state);
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

/** The clone's outcome on the runner's pipe (PADDOCK_CLONED_FD), then its end; a runner gone meanwhile is no error. */
function tellRunner(pipe: Writable | null, clone: Promise<string>): void {
  pipe?.on("error", () => undefined);
  void clone.then((word) => pipe?.end(`${word}\n`));
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

/** A small JSON file of the sandbox's (its record, a member's, runner.json), read at once; null when absent or unreadable. */
function readJson<T>(path: string): T | null {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch {
    return null;
  }
}

const readRecord = (state: string) => readJson<SandboxRecord>(join(state, "sandbox.json"));
const readMember = (state: string) => readJson<MemberRecord>(join(state, MEMBER_FILE));
const readInfo = (state: string) => readJson<RunnerInfo>(join(state, RUNNER_INFO_FILE));

/** The runner's pid while it is the process that was spawned (its start time matches), else null. */
function readPid(state: string): number | null {
  let written = "";
  try {
    written = readFileSync(join(state, RUNNER_PID_FILE), "utf8");
  } catch {
    return null;
  }
  const [text = "", start] = written.split(" ");
  const pid = Number(text);
  if (!Number.isInteger(pid) || pid <= 0) return null;
  if (start !== undefined) {
    const now = processStart(pid);
    if (now !== null && now !== start) return null; // another process has that pid now
  }
  return pid;
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
