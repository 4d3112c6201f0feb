import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync, writeFileSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { RUNNER_EVENTS_FILE, RUNNER_INFO_FILE, type RunnerInfo } from "../../agent/runner-protocol.js";
import { SandboxError } from "../../errors.js";
import type { CleanupResult, SandboxProvider, SandboxSpec, SandboxStatus } from "../provider.js";
import { createRunnerClient } from "../runner-client.js";
import { git } from "../git.js";
import { keepWork, prepareSource } from "../repository-source.js";

export interface LocalProviderOptions {
  /** Sandboxes live in <root>/sandboxes/<name>, mirrors of remote repositories in <root>/repos. */
  root: string;
  /** argv that starts `paddock agent` (the binary itself, or node + main.ts in development). */
  runnerCommand: string[];
  /** Environment the runner and the agent start from (PATH, HOME…). */
  baseEnv: Record<string, string | undefined>;
  /** How long the runner gives the agent between SIGTERM and SIGKILL. */
  graceMs: number;
  /** How long provisioning waits for a started runner to answer. */
  runnerStartTimeoutMs: number;
}

/** What provisioning remembers about a sandbox, for cleanup after a restart. */
interface SandboxRecord {
  runId: string;
  /** The git repository the worktree belongs to: the user's local repo or our mirror. */
  source: string;
  resultBranch: string;
  token: string;
}

/**
 * The embedded default: a git worktree and a child process on this host. No isolation and
 * no network policy — the agent runs as the daemon's user — which the API says on the run.
 */
export class LocalProvider implements SandboxProvider {
  readonly name = "local";
  readonly enforcesNetworkPolicy = false;

  constructor(private readonly opts: LocalProviderOptions) {}

  private dir(name: string) {
    return join(this.opts.root, "sandboxes", name);
  }

  async provision(spec: SandboxSpec, signal: AbortSignal, progress: (line: string) => void): Promise<SandboxStatus> {
    const dir = this.dir(spec.name);
    const state = join(dir, "state");
    const workspace = join(dir, "workspace");
    await mkdir(state, { recursive: true });

    const found = await this.inspect(spec.name);
    if (found.state === "running") {
      progress(`re-attached to the running sandbox ${spec.name}`);
      return found;
    }
    if (existsSync(join(state, RUNNER_EVENTS_FILE))) {
      // The agent already ran here and its runner is gone: starting it again would run the agent twice.
      throw new SandboxError(`the runner of sandbox ${spec.name} exited before the daemon reattached`, false);
    }

    const source = await prepareSource(this.opts.root, spec.repositoryUrl, signal, progress);
    const record: SandboxRecord = { runId: spec.runId, source, resultBranch: spec.resultBranch, token: spec.token };
    await writeFile(join(state, "sandbox.json"), JSON.stringify(record), { mode: 0o600 });

    if (!existsSync(join(workspace, ".git"))) {
      const start = spec.branch || "HEAD";
      try {
        await git(["rev-parse", "--verify", "--quiet", `${start}^{commit}`], { cwd: source, signal });
      } catch {
        throw new SandboxError(`branch ${JSON.stringify(spec.branch)} not found in ${spec.repositoryUrl}`, false);
      }
      await git(["worktree", "prune"], { cwd: source, signal });
      // -B: a retry after a crash between branch and worktree creation resets our own branch.
      await git(["worktree", "add", "--quiet", "-B", spec.resultBranch, workspace, start], { cwd: source, signal });
      progress(`checked out ${spec.branch || "the default branch"} into a worktree on ${spec.resultBranch}`);
    }

    // A runner started before a daemon crash may not have written runner.json yet: wait
    // for that one rather than start a second, which would run the agent twice.
    const started = await readPid(state);
    if (started === null || !alive(started)) await this.startRunner(spec, workspace, state);
    return this.waitForRunner(spec, state, signal);
  }

  private async startRunner(spec: SandboxSpec, workspace: string, state: string): Promise<void> {
    const [file, ...args] = this.opts.runnerCommand;
    const logFd = openSync(join(state, "runner.log"), "a");
    try {
      const child = spawn(file!, args, {
        cwd: workspace,
        detached: true, // own process group: survives a daemon SIGKILL, killable as a group
        stdio: ["ignore", logFd, logFd],
        env: {
          ...this.opts.baseEnv,
          PADDOCK_RUN_ID: spec.runId,
          PADDOCK_RUNNER_HOST: "127.0.0.1",
          PADDOCK_RUNNER_PORT: "0",
          PADDOCK_WORKDIR: workspace,
          PADDOCK_STATE_DIR: state,
          PADDOCK_AGENT_COMMAND: JSON.stringify(spec.agentCommand),
          PADDOCK_PROMPT: spec.prompt,
          PADDOCK_GRACE_MS: String(this.opts.graceMs),
          // The daemon starts the agent with POST /start, handing over the environment then.
          PADDOCK_HOLD: "1",
          JWT_PUBLIC_KEY: spec.publicKeyPem,
        },
      });
      child.on("error", () => {}); // surfaces below as a runner that never answers
      child.unref();
      if (child.pid) writeFileSync(join(state, RUNNER_PID_FILE), String(child.pid));
    } finally {
      closeSync(logFd);
    }
  }

  private async waitForRunner(spec: SandboxSpec, state: string, signal: AbortSignal): Promise<SandboxStatus> {
    const until = Date.now() + this.opts.runnerStartTimeoutMs;
    let last = "no runner.json yet";
    while (Date.now() < until) {
      signal.throwIfAborted();
      const info = await readInfo(state);
      if (info) {
        if (!alive(info.pid)) break;
        const endpoint = `http://127.0.0.1:${info.port}`;
        try {
          const health = await createRunnerClient(endpoint, spec.token).health(signal);
          if (health.runId === spec.runId) return { state: "running", endpoint };
          last = `runner answered for ${health.runId}`;
        } catch (error) {
          last = (error as Error).message;
        }
      }
      await sleep(20, undefined, { signal });
    }
    const log = await readFile(join(state, "runner.log"), "utf8").catch(() => "");
    const tail = log.trim().split("\n").slice(-5).join(" | ");
    throw new SandboxError(`runner did not start (${last})${tail ? `: ${tail}` : ""}`, false);
  }

  async inspect(name: string): Promise<SandboxStatus> {
    const dir = this.dir(name);
    if (!existsSync(dir)) return { state: "missing" };
    const info = await readInfo(join(dir, "state"));
    if (!info || !alive(info.pid)) return { state: "stopped" };
    return { state: "running", endpoint: `http://127.0.0.1:${info.port}` };
  }

  async destroy(name: string, signal: AbortSignal): Promise<CleanupResult> {
    const dir = this.dir(name);
    if (!existsSync(dir)) return {};
    const state = join(dir, "state");
    const workspace = join(dir, "workspace");
    const info = await readInfo(state);
    const record = await readFile(join(state, "sandbox.json"), "utf8")
      .then((t) => JSON.parse(t) as SandboxRecord)
      .catch(() => null);

    if (info && alive(info.pid)) {
      if (record) {
        // Politely first: the runner gives the agent its grace period, then exits.
        await createRunnerClient(`http://127.0.0.1:${info.port}`, record.token)
          .shutdown(AbortSignal.any([signal, AbortSignal.timeout(this.opts.graceMs + 5_000)]))
          .catch(() => undefined);
      }
      await killGroup(info.pid, this.opts.graceMs);
    }
    if (info?.agentPid) await killGroup(info.agentPid, 0);
    const pid = await readPid(state);
    if (pid !== null && alive(pid)) await killGroup(pid, 0);

    const result: CleanupResult = {};
    if (existsSync(join(workspace, ".git"))) {
      result.resultCommit = await keepWork(workspace, record?.runId ?? name, signal);
      if (record) await git(["worktree", "remove", "--force", workspace], { cwd: record.source, signal });
    }
    await rm(dir, { recursive: true, force: true });
    if (record) await git(["worktree", "prune"], { cwd: record.source, signal }).catch(() => undefined);
    return result;
  }

  async list(): Promise<string[]> {
    const names = await readdir(join(this.opts.root, "sandboxes")).catch(() => [] as string[]);
    return names.filter((n) => n.startsWith("paddock-"));
  }
}

/** The runner's pid as the provider saw it at spawn, before the runner could say anything. */
const RUNNER_PID_FILE = "runner.pid";

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
  if (graceMs > 0) {
    signalGroup("SIGTERM");
    const until = Date.now() + graceMs;
    while (alive(pid) && Date.now() < until) await sleep(25);
  }
  signalGroup("SIGKILL");
  const until = Date.now() + 2_000;
  while (alive(pid) && Date.now() < until) await sleep(10);
}
