import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect } from "vitest";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { TaskService } from "../src/gen/paddock/v1/task_pb.js";
import { RunStatus, TaskRunService } from "../src/gen/paddock/v1/task_run_pb.js";
import { runnerCommand } from "../src/app.js";
import { issueSandboxToken, loadOrCreateSandboxKeys } from "../src/auth/sandbox-token.js";
import { LocalProvider } from "../src/sandbox/local/local-provider.js";
import { alive, bearer, cleanUp, type Daemon, freePort, gitEnv, makeGitRepo, removeLocalWork, killHard, serveCompiled, sh, startDaemon, tempDir, test } from "./fixtures.js";

/**
 * The local provider's warm pool (an environment's warm_pool), with real git, real runner
 * processes and a real daemon over gRPC/Connect: a member is claimed only by runs of its
 * environment and repository, carries nothing of another run, and after a SIGKILL of the
 * daemon the restarted one removes the unclaimed members it finds (its own, by process
 * identity) while the claimed one's run carries on.
 */
const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "dist", "paddock");

/** Pool members in a data dir: name → its runner's pid, for those whose runner waits for a claim. */
function waitingMembers(dataDir: string): Map<string, number> {
  const root = join(dataDir, "sandboxes");
  const found = new Map<string, number>();
  const claimed = new Set<string>();
  for (const n of existsSync(root) ? readdirSync(root) : []) if (lstatSync(join(root, n)).isSymbolicLink()) claimed.add(readlinkSync(join(root, n)));
  for (const n of existsSync(root) ? readdirSync(root) : []) {
    if (!n.startsWith("paddock-pool-") || claimed.has(n)) continue;
    try {
      if (!readFileSync(join(root, n, "state", "runner.log"), "utf8").includes("waiting for its claim")) continue;
      found.set(n, Number(readFileSync(join(root, n, "state", "runner.pid"), "utf8").split(" ")[0]));
    } catch {
      /* being made or removed */
    }
  }
  return found;
}

/** The commit (12 hex) a member's workspace was prepared at, from its runner's log. */
function preparedAt(dataDir: string, name: string): string | undefined {
  try {
    return /workspace ready at ([0-9a-f]{12})/.exec(readFileSync(join(dataDir, "sandboxes", name, "state", "runner.log"), "utf8"))?.[1];
  } catch {
    return undefined;
  }
}

async function until<T>(what: string, probe: () => T | undefined | false, timeoutMs = 60_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

async function logsOf(runs: Daemon["runs"], runId: string) {
  const out = [];
  for await (const res of runs.streamLogs({ runId, follow: false })) out.push(...res.entries);
  return out;
}

describe("local warm pool", () => {
  test("a hit runs the task on the claimed member with the run's own branch and nothing of another run; members serve only their environment and repository", async ({ repo }) => {
    const d = await startDaemon();
    let stopped = false;
    const other = makeGitRepo();
    sh(other, "git", "commit", "--quiet", "--allow-empty", "-m", "other's own commit");
    try {
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(d.adminToken)] }));
      const head = (r: string) => sh(r, "git", "rev-parse", "HEAD").slice(0, 12);
      const warm = (await envs.createEnvironment({ environment: { name: "warm", networkAccess: NetworkAccess.FULL, warmPool: 1, repositories: [repo, other] } })).environment!;
      // Wants members too, but lists no repository (any is allowed): none are made for it ahead.
      const elsewhere = (await envs.createEnvironment({ environment: { name: "elsewhere", networkAccess: NetworkAccess.FULL, warmPool: 1 } })).environment!;
      // One member per repository, told apart by the commit its workspace was prepared at.
      const memberOf = (r: string) => [...waitingMembers(d.dataDir).keys()].find((n) => preparedAt(d.dataDir, n) === head(r));
      const first = await until("the member of the repository", () => memberOf(repo));
      const otherFirst = await until("the member of the other repository", () => memberOf(other));

      // The first run leaves a file in its workspace and its HOME.
      const agent = [
        "sh",
        "-c",
        'echo "branch=$(git rev-parse --abbrev-ref HEAD)"; echo "commit=$(git log --format=%s -1)"; echo "files=$(ls -A | tr "\\n" " ")"; echo "home=$(ls -A "$HOME" | tr "\\n" " ")"; echo "prompt=$(echo "$PADDOCK_PROMPT" | head -1)"; echo mine > left-by-run; echo mine > "$HOME/left-by-run"',
      ];
      const start = async (title: string, repository: string, environmentId: string) => {
        const { task } = await d.tasks.createTask({ title, repository, environmentId });
        const run = (await d.runs.startRun({ taskId: task!.id, agentCommand: agent })).run!;
        expect(await waitEnd(d, run.id)).toMatchObject({ status: RunStatus.COMPLETED, exitCode: 0, resultBranch: `paddock/${run.id}` });
        const logs = await logsOf(d.runs, run.id);
        const took = logs.find((l) => l.stream === "system" && l.text.startsWith("took the warm runner"))?.text ?? "";
        return { id: run.id, took, out: said(logs), logs };
      };
      const run1 = await start("warm one", repo, warm.id);
      expect(run1.took).toMatch(new RegExp(`^took the warm runner ${first} as paddock-${run1.id}-1 `));
      expect(run1.out).toMatchObject({ branch: `paddock/${run1.id}`, commit: "initial", prompt: "warm one" });
      // The agent's file came back on the run's branch.
      expect(sh(repo, "git", "show", `paddock/${run1.id}:left-by-run`)).toBe("mine");

      // The other repository's run takes that repository's member.
      const run2 = await start("warm other", other, warm.id);
      expect(run2.took).toMatch(new RegExp(`^took the warm runner ${otherFirst} as paddock-${run2.id}-1 `));
      expect(run2.out).toMatchObject({ branch: `paddock/${run2.id}`, commit: "other's own commit" });

      // The refill is a new member: the next run sees nothing the first left.
      const second = await until("the refilled member", () => memberOf(repo) !== first && memberOf(repo));
      const run3 = await start("warm two", repo, warm.id);
      expect(run3.took).toMatch(new RegExp(`^took the warm runner ${second} as paddock-${run3.id}-1 `));
      expect(run3.out).toMatchObject({ branch: `paddock/${run3.id}`, commit: "initial", prompt: "warm two" });
      expect(run3.out.files).toContain("README.md");
      expect(run3.out.files).not.toContain("left-by-run");
      expect(run3.out.home).not.toContain("left-by-run");

      // The same repository in another environment does not take the member waiting for (warm, repo).
      const third = await until("the member after the third run", () => memberOf(repo) !== second && memberOf(repo));
      const run4 = await start("not the member's", repo, elsewhere.id);
      expect(run4.took).toBe("");
      expect(run4.logs.some((l) => l.stream === "system" && l.text === "warm pool: no ready runner for this repository")).toBe(true);
      expect(run4.out.commit).toBe("initial");
      expect(waitingMembers(d.dataDir).has(third)).toBe(true);

      // warm_pool 0 removes the environment's waiting members (of both its repositories).
      const warmMembers = [...waitingMembers(d.dataDir)].filter(([n]) => n === third || preparedAt(d.dataDir, n) === head(other));
      expect(warmMembers.length).toBe(2);
      await envs.updateEnvironment({ environment: { ...warm, warmPool: 0 } });
      await until("the environment's members to go", () => warmMembers.every(([n, pid]) => !existsSync(join(d.dataDir, "sandboxes", n)) && !alive(pid)));

      // The daemon's stop removes the members nobody claimed, and their runners.
      const pids = [...waitingMembers(d.dataDir).values()];
      expect(pids.length).toBeGreaterThan(0);
      stopped = true;
      await cleanUp(d);
      expect(pids.filter(alive)).toEqual([]);
    } finally {
      if (!stopped) await cleanUp(d);
      rmSync(other, { recursive: true, force: true });
    }
  });

  test.runIf(existsSync(BIN))("after a SIGKILL of the daemon, the restarted one reaps the unclaimed members by process identity and carries the claimed one's run on", async ({ repo }) => {
    const dataDir = tempDir("lwp");
    const port = await freePort();
    // The agent waits for this file (as root each agent has a uid of its own: the directory is open to it).
    const gate = tempDir("gate");
    chmodSync(gate, 0o755);
    const go = join(gate, "go");
    let daemon: ChildProcess | undefined;
    // No docker engine: on a local-default daemon an environment's warm_pool makes docker
    // members too where there is one, and this daemon dies by SIGKILL (it left their network).
    const serve = () => serveCompiled(BIN, { dataDir, port, env: gitEnv, args: ["--socket", "", "--default-provider", "local", "--docker-socket", join(dataDir, "no-docker.sock")] });
    // Its own process group, as a runner has: a kill of the group would reach it.
    const decoy = spawn("sleep", ["600"], { stdio: "ignore", detached: true });
    try {
      daemon = await serve();
      const transport = createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1", interceptors: [bearer(readFileSync(join(dataDir, "admin-token"), "utf8").trim())] });
      const envs = createClient(EnvironmentService, transport);
      const tasks = createClient(TaskService, transport);
      const runs = createClient(TaskRunService, transport);
      const env = (await envs.createEnvironment({ environment: { name: "warm", networkAccess: NetworkAccess.FULL, warmPool: 2, repositories: [repo] } })).environment!;
      await until("two members", () => waitingMembers(dataDir).size === 2);

      const { task } = await tasks.createTask({ title: "survives", repository: repo, environmentId: env.id });
      const run = (await runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", `echo started; while [ ! -e ${go} ]; do sleep 0.05; done; echo carried on`] })).run!;
      for await (const res of runs.streamLogs({ runId: run.id, follow: true })) if (res.entries.some((e) => e.text === "started")) break;
      const claimedBy = (await logsOf(runs, run.id)).find((l) => l.text.startsWith("took the warm runner"))?.text.split(" ")[4];
      expect(claimedBy).toMatch(/^paddock-pool-/);
      // The refill brings the pool back to two waiting members; then the daemon dies.
      const unclaimed = await until("the refill", () => {
        const m = waitingMembers(dataDir);
        return m.size === 2 && !m.has(claimedBy!) && m;
      });
      const claimedPid = Number(readFileSync(join(dataDir, "sandboxes", claimedBy!, "state", "runner.pid"), "utf8").split(" ")[0]);
      // A member left by a dead daemon whose pid is now another process's (not the runner it started): never killed.
      const fake = join(dataDir, "sandboxes", "paddock-pool-0decoy0decoy", "state");
      mkdirSync(fake, { recursive: true });
      writeFileSync(join(fake, "runner.pid"), `${decoy.pid} 1`);
      await killHard(daemon);
      expect([...unclaimed.values()].every(alive)).toBe(true); // runners outlive their daemon

      daemon = await serve();
      await until("the old members' runners to be gone", () => [...unclaimed.values()].every((pid) => !alive(pid)));
      await until("the old members' directories to be gone", () => [...unclaimed.keys(), "paddock-pool-0decoy0decoy"].every((n) => !existsSync(join(dataDir, "sandboxes", n))));
      expect(alive(decoy.pid!)).toBe(true);
      expect(alive(claimedPid)).toBe(true);

      writeFileSync(go, "");
      let final;
      for await (const res of runs.watchRun({ runId: run.id }, { timeoutMs: 60_000 })) final = res.run!;
      expect(final).toMatchObject({ status: RunStatus.COMPLETED, exitCode: 0, phase: "cleaned" });
      const out = (await logsOf(runs, run.id)).filter((l) => l.stream === "stdout").map((l) => l.text);
      expect(out).toEqual(["started", "carried on"]);
      expect(sh(repo, "git", "rev-parse", "--verify", `paddock/${run.id}`)).toMatch(/^[0-9a-f]{40}$/);
      expect(existsSync(join(dataDir, "sandboxes", claimedBy!))).toBe(false);
    } finally {
      writeFileSync(go, ""); // an agent still waiting (an assertion failed before) ends, rather than outlive the test
      decoy.kill("SIGKILL");
      if (daemon && daemon.exitCode === null) {
        daemon.kill("SIGTERM");
        await new Promise((r) => daemon!.once("exit", r));
      }
      try {
        removeLocalWork(dataDir);
      } catch {
        /* no database */
      }
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(gate, { recursive: true, force: true });
    }
  });
});

describe("local provider", () => {
  test("cleanup of a provisioning cut short after its runner's checkout, before it listens, leaves that runner no way to outlive it", async ({ repo }) => {
    const root = tempDir("lp");
    // The first start stands for a runner that has checked out (the workspace has .git) and
    // does not listen yet; a second start is the real runner.
    const first = 'if [ -e "$PADDOCK_STATE_DIR/second" ]; then exec "$@"; fi; touch "$PADDOCK_STATE_DIR/second"; mkdir -p "$PADDOCK_WORKDIR/.git"; exec sleep 300';
    const provider = new LocalProvider({ root, agentUids: null, workRoot: join(root, "work"), runnerCommand: ["sh", "-c", first, "sh", ...runnerCommand()], baseEnv: gitEnv, graceMs: 1000, runnerStartTimeoutMs: 3_000 });
    const keys = await loadOrCreateSandboxKeys(root);
    const runId = "run_cutshort";
    const name = `paddock-${runId}-1`;
    const spec = { runId, name, repositoryUrl: repo, branch: "", resultBranch: `paddock/${runId}`, agentCommand: ["true"], prompt: "", publicKeyPem: keys.publicKeyPem, token: await issueSandboxToken(keys, runId, 600), network: null, logBudget: { maxBytes: 1 << 20, maxLines: 1000 }, limits: {} };
    const cut = new AbortController();
    const provisioning = provider.provision(spec, cut.signal, () => undefined).then(() => null, (e: Error) => e);
    const sandbox = join(root, "sandboxes", name);
    await until("the first runner's checkout", () => existsSync(join(sandbox, "workspace", ".git")));
    const pid = Number(readFileSync(join(sandbox, "state", "runner.pid"), "utf8").split(" ")[0]);
    cut.abort(); // the run's deadline, or a cancel
    expect(await provisioning).toBeInstanceOf(Error);
    await provider.destroy(name, AbortSignal.timeout(60_000));
    expect(alive(pid)).toBe(false);
    expect(existsSync(sandbox)).toBe(false);
    rmSync(root, { recursive: true, force: true });
  });
});

async function waitEnd(d: Daemon, runId: string) {
  let last;
  for await (const res of d.runs.watchRun({ runId }, { timeoutMs: 60_000 })) last = res.run!;
  return last!;
}

/** The agent's `name=value` lines. */
function said(logs: { stream: string; text: string }[]): Record<string, string> {
  return Object.fromEntries(logs.filter((l) => l.stream === "stdout" && l.text.includes("=")).map((l) => [l.text.slice(0, l.text.indexOf("=")), l.text.slice(l.text.indexOf("=") + 1)]));
}
