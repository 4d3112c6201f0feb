/**
 * The local provider clones a new sandbox's workspace while its runner starts, and tells
 * the runner on a pipe (PADDOCK_CLONED_FD) when the clone is whole. Here: the runner's side
 * of that contract with the real runner and a real pipe (the test plays the provider), and
 * the daemon's, through runs a user starts.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import type { Writable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { runnerCommand } from "../src/app.js";
import { runnerEnvironment } from "../src/agent/runner-env.js";
import { RUNNER_INFO_FILE } from "../src/agent/runner-protocol.js";
import { loadOrCreateSandboxKeys } from "../src/auth/sandbox-token.js";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { allLogs, compiledClients, freePort, gitEnv, instanceOf, killHard, makeGitRepo, processesNaming, processesOf, serveCompiled, sh, tempDir, test, watchToEnd } from "./fixtures.js";

const isRoot = process.getuid?.() === 0;
/** The agent's own uid when the runner is root, as the local provider gives it one. */
const AGENT = isRoot ? 4243 : undefined;

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

/** A runner started as the local provider starts one with its clone under way: fd 4 is the test's to write. */
async function runnerAwaitingClone() {
  const root = tempDir("clone");
  chmodSync(root, 0o711); // the agent's uid reaches its workspace through it
  const source = makeGitRepo();
  const workspace = join(root, "workspace");
  const state = join(root, "state");
  const keys = await loadOrCreateSandboxKeys(join(root, "keys"));
  const [file, ...args] = runnerCommand();
  const child = spawn(file!, args, {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe", "ignore", "pipe"],
    env: {
      ...gitEnv,
      ...runnerEnvironment({
        PADDOCK_RUN_ID: "run_clone1",
        PADDOCK_RUNNER_HOST: "127.0.0.1",
        PADDOCK_RUNNER_PORT: 0,
        PADDOCK_WORKDIR: workspace,
        PADDOCK_STATE_DIR: state,
        // Not the source: a runner that cloned it itself, not waiting for the provider's clone, fails.
        PADDOCK_SOURCE: join(root, "no-such-source"),
        PADDOCK_RESULT_BRANCH: "paddock/run_clone1",
        PADDOCK_AGENT_COMMAND: JSON.stringify(["true"]),
        PADDOCK_AGENT_UID: AGENT,
        PADDOCK_AGENT_GID: AGENT,
        PADDOCK_AGENT_HOME: join(root, "home"),
        PADDOCK_AGENT_PATH: process.env.PATH,
        JWT_PUBLIC_KEY: keys.publicKeyPem,
        PADDOCK_CLONED_FD: 4,
      }),
    },
  });
  children.push(child);
  let output = "";
  child.stdout!.on("data", (c: Buffer) => (output += c));
  child.stderr!.on("data", (c: Buffer) => (output += c));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const pipe = child.stdio[4] as Writable;
  pipe.on("error", () => undefined);
  /** Until the runner listens (runner.json written), or it exits: then its output says why. */
  const listening = async () => {
    for (;;) {
      if (existsSync(join(state, RUNNER_INFO_FILE))) return;
      if (child.exitCode !== null) throw new Error(`the runner exited: ${output}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { source, workspace, state, pipe, exited, listening, output: () => output };
}

describe("a runner whose provider clones the workspace", () => {
  it("checks out the run's branch from the provider's clone once told it is whole, the files its agent's", async () => {
    const r = await runnerAwaitingClone();
    // As the provider does: no work tree, into a directory beside the workspace, renamed when whole.
    sh(join(r.workspace, ".."), "git", "clone", "--quiet", "--no-hardlinks", "--no-checkout", r.source, `${r.workspace}.cloning`);
    renameSync(`${r.workspace}.cloning`, r.workspace);
    r.pipe.end("ok\n");
    await r.listening();
    // Before git runs here as root (its status rewrites the index).
    if (AGENT !== undefined) {
      for (const f of ["README.md", ".git/index", ".git/HEAD", ".git/objects"]) expect([f, statSync(join(r.workspace, f)).uid]).toEqual([f, AGENT]);
    }
    const git = (...args: string[]) => sh(r.workspace, "git", "-c", "safe.directory=*", ...args);
    expect(git("symbolic-ref", "HEAD")).toBe("refs/heads/paddock/run_clone1");
    expect(git("rev-parse", "HEAD")).toBe(sh(r.source, "git", "rev-parse", "main"));
    expect(git("status", "--porcelain")).toBe("");
    expect(readFileSync(join(r.workspace, "README.md"), "utf8")).toBe("hello\n");
  });

  it("fails its checkout with the provider's reason when the clone failed, and listens never", async () => {
    const r = await runnerAwaitingClone();
    r.pipe.end("git clone failed: fatal: repository '/nowhere' does not exist\n");
    expect(await r.exited).not.toBe(0);
    expect(r.output()).toContain("paddock agent: checkout failed: git clone failed: fatal: repository '/nowhere' does not exist");
    expect(existsSync(join(r.state, RUNNER_INFO_FILE))).toBe(false);
  });

  it("fails its checkout when the provider went away before saying (a daemon killed mid-clone)", async () => {
    const r = await runnerAwaitingClone();
    r.pipe.end();
    expect(await r.exited).not.toBe(0);
    expect(r.output()).toContain("checkout failed: the daemon's clone of the repository did not finish");
    expect(existsSync(join(r.workspace, ".git"))).toBe(false); // nothing was checked out
  });
});

describe("local runs, their workspace cloned by the daemon", () => {
  test("a repository that is no longer one when the run starts fails the run with git's reason", async ({ daemon, repo }) => {
    const { task } = await daemon.tasks.createTask({ title: "gone", repository: repo });
    rmSync(join(repo, ".git"), { recursive: true, force: true });
    const { run } = await daemon.runs.startRun({ taskId: task!.id, provider: "local", agentCommand: ["true"] });
    const final = (await watchToEnd(daemon, run!.id)).pop()!;
    expect(final.status).toBe(RunStatus.FAILED);
    expect(final.errorMessage).toContain("git clone failed");
    expect(final.errorMessage).toContain(repo);
  });

  test.runIf(isRoot)("runs started together each get a uid of their own", async ({ daemon, repo }) => {
    const { task } = await daemon.tasks.createTask({ title: "together", repository: repo });
    const started = await Promise.all([1, 2, 3, 4].map(() => daemon.runs.startRun({ taskId: task!.id, provider: "local", agentCommand: ["sh", "-c", "echo uid=$(id -u)"] })));
    const uids: string[] = [];
    for (const { run } of started) {
      const final = (await watchToEnd(daemon, run!.id)).pop()!;
      expect({ status: final.status, error: final.errorMessage }).toEqual({ status: RunStatus.COMPLETED, error: "" });
      const line = (await allLogs(daemon, run!.id)).find((l) => l.text.startsWith("uid="));
      uids.push(line!.text);
    }
    expect(new Set(uids).size).toBe(4);
    expect(uids).not.toContain("uid=0");
  });
});

/** A repository with an incompressible 64 MiB file: its clone is long enough to be seen under way. */
function bigRepo(): string {
  const repo = makeGitRepo();
  writeFileSync(join(repo, "big.bin"), execFileSync("head", ["-c", String(64 << 20), "/dev/urandom"], { maxBuffer: 80 << 20 }));
  sh(repo, "git", "add", "big.bin");
  sh(repo, "git", "commit", "--quiet", "-m", "big");
  return repo;
}

/** Until a sandbox under `work` has the daemon's clone under way (its directory beside the workspace). */
async function cloneUnderWay(work: string): Promise<string> {
  const cloning = () => (existsSync(work) ? readdirSync(work) : []).map((d) => join(work, d, "workspace.cloning")).find((p) => existsSync(p));
  for (let i = 0; i < 6000 && !cloning(); i++) await new Promise((r) => setTimeout(r, 5));
  const found = cloning();
  expect(found).toBeDefined();
  return found!;
}

describe.runIf(isRoot)("a run cancelled while the daemon clones its workspace", () => {
  test("ends cancelled; the clone is stopped and the sandbox's tree gone", { timeout: 120_000 }, async ({ daemon }) => {
    const repo = bigRepo();
    const { task } = await daemon.tasks.createTask({ title: "big", repository: repo });
    const { run } = await daemon.runs.startRun({ taskId: task!.id, provider: "local", agentCommand: ["sh", "-c", "echo agent ran"] });
    const partial = await cloneUnderWay(join("/var/lib/paddock-work", instanceOf(daemon.dataDir)));
    await daemon.runs.cancelRun({ runId: run!.id });
    const final = (await watchToEnd(daemon, run!.id)).pop()!;
    expect(final.status).toBe(RunStatus.CANCELLED);
    expect((await allLogs(daemon, run!.id)).map((l) => l.text)).not.toContain("agent ran");
    expect(processesNaming(partial)).toEqual([]);
    expect(existsSync(dirname(partial))).toBe(false);
  });
});

describe.runIf(isRoot)("a daemon killed while it clones a workspace", () => {
  const BIN = resolve(import.meta.dirname, "..", "dist", "paddock");

  it("leaves no half clone in the runner's way: restarted, it runs the agent once and completes the run", { timeout: 180_000 }, async () => {
    if (!existsSync(BIN)) execFileSync("npm", ["run", "--silent", "build"], { cwd: resolve(import.meta.dirname, ".."), stdio: "inherit" });
    const repo = bigRepo();
    const dataDir = tempDir("clone-kill");
    const work = tempDir("clone-kill-work");
    chmodSync(work, 0o711);
    const port = await freePort();
    const serve = () => serveCompiled(BIN, { dataDir, port, env: gitEnv, args: ["--default-provider", "local", "--local-work-dir", work] });
    let daemon = await serve();
    try {
      const { tasks, runs } = compiledClients(dataDir, port);
      const { task } = await tasks.createTask({ title: "big", repository: repo });
      const { run } = await runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", "echo agent ran; test -s big.bin && echo big there"] });
      await cloneUnderWay(work);
      await killHard(daemon);

      daemon = await serve();
      const final = (await watchToEnd({ runs }, run!.id, 120_000)).pop()!;
      expect({ status: final.status, error: final.errorMessage }).toEqual({ status: RunStatus.COMPLETED, error: "" });
      const lines = (await allLogs({ runs }, run!.id)).map((l) => l.text);
      expect(lines.filter((l) => l === "agent ran")).toHaveLength(1);
      expect(lines).toContain("big there");
      expect(processesOf([run!.id])).toEqual([]);
      expect(existsSync(work) ? readdirSync(work) : []).toEqual([]); // the sandbox's tree, its half clone with it, is gone
    } finally {
      await killHard(daemon);
      rmSync(work, { recursive: true, force: true });
    }
  });
});
