import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect } from "vitest";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { allLogs, bearer, dockerAvailable, processesNaming, sh, tempDir, test, waitForPhase, watchToEnd, type Daemon } from "./fixtures.js";

/**
 * The sandbox boundary, attacked as issue 7 found it attacked: each test is an agent doing
 * what a hostile one did, and asserts that nothing of the host or the user's repository
 * changed but the run's own branch. Local runs need root (CI is root) for their own uid.
 */
const isRoot = process.getuid?.() === 0;
const dockerUp = dockerAvailable();
const providers = [...(isRoot ? ["local"] : []), ...(dockerUp ? ["docker"] : [])];

function refsOf(repo: string): Record<string, string> {
  const out = sh(repo, "git", "for-each-ref", "--format=%(refname) %(objectname)");
  return Object.fromEntries(out.split("\n").filter(Boolean).map((l) => l.split(" ") as [string, string]));
}

function containersOf(runId: string): string[] {
  return execFileSync("docker", ["ps", "-aq", "--filter", `label=paddock.run=${runId}`], { encoding: "utf8" }).split("\n").filter(Boolean);
}

async function startRun(d: Daemon, repo: string, provider: string, script: string, extra: { timeoutSeconds?: number; environmentId?: string } = {}) {
  const { task } = await d.tasks.createTask({ title: "hostile agent", repository: repo });
  const { run } = await d.runs.startRun({ taskId: task!.id, provider, agentCommand: ["sh", "-c", script], ...extra });
  return run!;
}

/** Hooks, fsmonitor and a clean filter that would each leave a file on the host if run there as root. */
function plantGitTraps(marker: string): string {
  return [
    "mkdir -p .git/hooks",
    `for h in pre-commit prepare-commit-msg commit-msg post-commit pre-auto-gc reference-transaction post-checkout; do printf '#!/bin/sh\\nid -u >> ${marker}\\n' > .git/hooks/$h; chmod +x .git/hooks/$h; done`,
    `git config core.fsmonitor "sh -c 'id -u >> ${marker}'"`,
    `git config filter.evil.clean "sh -c 'id -u >> ${marker}; cat'"`,
    `git config core.sshCommand "sh -c 'id -u >> ${marker}'"`,
    "echo '* filter=evil' > .gitattributes",
    "echo left-uncommitted > work.txt",
  ].join("; ");
}

/** The marker may exist only if written by the agent's own (non-root) user, never by the host as root. */
function rootNeverRan(marker: string): void {
  if (!existsSync(marker)) return;
  const uids = readFileSync(marker, "utf8").split("\n").filter(Boolean);
  expect(uids).not.toContain("0");
}

describe.each(providers)("the sandbox boundary on %s", (provider) => {
  const timeout = provider === "docker" ? 180_000 : 60_000;

  test("git hooks, fsmonitor and filters planted by the agent never run as root on the host", { timeout }, async ({ daemon, repo }) => {
    const dir = tempDir("marker");
    const marker = join(dir, "ran-as");
    try {
      const run = await startRun(daemon, repo, provider, plantGitTraps(marker));
      const final = (await watchToEnd(daemon, run.id, timeout)).pop()!;
      expect({ status: final.status, error: final.errorMessage }).toEqual({ status: RunStatus.COMPLETED, error: "" });
      rootNeverRan(marker);
      // The uncommitted work still came back, on the run's branch only.
      expect(sh(repo, "git", "show", `${final.resultBranch}:work.txt`)).toBe("left-uncommitted");
      expect(sh(repo, "git", "config", "--get-regexp", "^(core\\.fsmonitor|filter\\.)").toString()).toBe("");
    } catch (error) {
      if ((error as { status?: number }).status === 1) return; // git config --get-regexp found nothing: as wanted
      throw error;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("only paddock/<run> changes in the user's repository, whatever the agent does to other branches", { timeout }, async ({ daemon, repo }) => {
    sh(repo, "git", "branch", "release");
    sh(repo, "git", "commit", "--allow-empty", "-q", "-m", "second");
    sh(repo, "git", "commit", "--allow-empty", "-q", "-m", "third");
    const before = refsOf(repo);
    const script = [
      "git checkout -q release",
      "echo mine > mine.txt && git add mine.txt && git -c user.name=a -c user.email=a@x commit -qm 'agent on release'",
      "git branch -f main HEAD~0",
      "git branch -f feature release",
      "git update-ref refs/remotes/origin/main HEAD",
      "echo also-uncommitted > more.txt",
    ].join(" && ");
    const run = await startRun(daemon, repo, provider, script);
    const final = (await watchToEnd(daemon, run.id, timeout)).pop()!;
    expect({ status: final.status, error: final.errorMessage }).toEqual({ status: RunStatus.COMPLETED, error: "" });
    const after = refsOf(repo);
    const resultRef = `refs/heads/${final.resultBranch}`;
    expect({ ...after, [resultRef]: undefined }).toEqual({ ...before, [resultRef]: undefined });
    // The result is the agent's HEAD (on release in the sandbox), with its uncommitted work.
    expect(after[resultRef]).toBe(final.resultCommit);
    expect(sh(repo, "git", "show", `${final.resultCommit}:mine.txt`)).toBe("mine");
    expect(sh(repo, "git", "show", `${final.resultCommit}:more.txt`)).toBe("also-uncommitted");
    const lines = await allLogs(daemon, run.id);
    expect(lines.some((l) => l.stream === "system" && /the agent left its branch paddock\/run_\w+ \(its HEAD was on branch release\)/.test(l.text))).toBe(true);
  });

  test("an agent that rewinds the checked-out branch changes nothing but its own branch", { timeout }, async ({ daemon, repo }) => {
    sh(repo, "git", "commit", "--allow-empty", "-q", "-m", "second");
    sh(repo, "git", "commit", "--allow-empty", "-q", "-m", "third");
    const before = refsOf(repo);
    const run = await startRun(daemon, repo, provider, "git checkout -q main && git reset -q --hard HEAD~2");
    const final = (await watchToEnd(daemon, run.id, timeout)).pop()!;
    expect({ status: final.status, error: final.errorMessage }).toEqual({ status: RunStatus.COMPLETED, error: "" });
    const after = refsOf(repo);
    expect(after["refs/heads/main"]).toBe(before["refs/heads/main"]);
    expect(after[`refs/heads/${final.resultBranch}`]).toBe(sh(repo, "git", "rev-parse", "main~2"));
  });

  test("an agent that exits while a child holds its output open finishes the run at once, not at the deadline", { timeout }, async ({ daemon, repo }) => {
    const run = await startRun(daemon, repo, provider, "(sleep 600) & echo finished", { timeoutSeconds: 45 });
    const final = (await watchToEnd(daemon, run.id, timeout)).pop()!;
    expect({ status: final.status, error: final.errorMessage }).toEqual({ status: RunStatus.COMPLETED, error: "" });
    expect(final.errorMessage).toBe("");
    expect((await allLogs(daemon, run.id)).some((l) => l.text === "finished")).toBe(true);
  });

  test("the agent's environment holds no runner credential, and it cannot read the runner's state", { timeout }, async ({ daemon, repo }) => {
    const script = [
      "echo uid=$(id -u)",
      "env | cut -d= -f1 | sort | sed 's/^/env:/'",
      "for f in $(ls -d /proc/[0-9]*); do cat $f/environ 2>/dev/null | tr '\\0' '\\n' | grep -q BEGIN && echo read-foreign-environ; done",
      'cat "$PADDOCK_STATE_PROBE"/runner.json 2>/dev/null && echo read-runner-json || true',
      "for p in /proc/[0-9]*; do kill -0 ${p#/proc/} 2>/dev/null && echo can-signal-$(cat $p/comm 2>/dev/null); done",
      "true",
    ].join("; ");
    const run = await startRun(daemon, repo, provider, script);
    const final = (await watchToEnd(daemon, run.id, timeout)).pop()!;
    expect({ status: final.status, error: final.errorMessage }).toEqual({ status: RunStatus.COMPLETED, error: "" });
    const out = (await allLogs(daemon, run.id)).filter((l) => l.stream === "stdout").map((l) => l.text);
    expect(out.find((l) => l.startsWith("uid="))).not.toBe("uid=0");
    const names = out.filter((l) => l.startsWith("env:")).map((l) => l.slice(4));
    expect(names).toContain("PATH");
    for (const n of names) expect(n).not.toMatch(/TOKEN|JWT|PADDOCK_(STATE|AGENT_COMMAND|SOURCE|RUNNER|HOLD|GRACE)/);
    expect(out).not.toContain("read-foreign-environ");
    expect(out).not.toContain("read-runner-json");
    // The runner (paddock in docker, node under the tests) is not among what the agent may signal.
    const signalable = out.filter((l) => l.startsWith("can-signal-"));
    expect(signalable.length).toBeGreaterThan(0); // its own processes, at least
    expect(signalable.filter((l) => /can-signal-(paddock|node|docker-init|bun)/.test(l))).toEqual([]);
  });

  test("secrets are redacted before the runner writes them: its event file never holds one", { timeout }, async ({ daemon, repo }) => {
    const secret = "boundary-secret-0123456789";
    const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", interceptors: [bearer(daemon.adminToken)] }));
    const { environment } = await envs.createEnvironment({ environment: { name: `secrets ${provider}`, networkAccess: NetworkAccess.FULL, defaultProvider: provider }, secrets: [{ name: "TOKEN_X", value: secret }] });
    const run = await startRun(daemon, repo, provider, 'echo "k=$TOKEN_X"; printf %s "$TOKEN_X" | base64; echo printed; exec sleep 300', { environmentId: environment!.id });
    await waitForPhase(daemon, run.id, "running", timeout);
    for (let i = 0; i < 600 && !(await allLogs(daemon, run.id)).some((l) => l.text === "printed"); i++) await new Promise((r) => setTimeout(r, 100));
    const lines = (await allLogs(daemon, run.id)).map((l) => l.text);
    expect(lines).toContain("k=[secret:TOKEN_X]");
    if (provider === "local") {
      const state = join(daemon.dataDir, "sandboxes", `paddock-${run.id}-1`, "state");
      const events = join(state, "events.jsonl");
      expect(readFileSync(events, "utf8")).not.toContain(secret);
      expect(readFileSync(events, "utf8")).not.toContain(Buffer.from(secret).toString("base64"));
      expect(statSync(events).mode & 0o777).toBe(0o600);
      expect(statSync(state).mode & 0o777).toBe(0o700);
    } else {
      const [id] = containersOf(run.id);
      const file = execFileSync("docker", ["exec", id!, "cat", "/paddock/state/events.jsonl"], { encoding: "utf8" });
      expect(file).toContain("printed");
      expect(file).not.toContain(secret);
      const mode = execFileSync("docker", ["exec", id!, "stat", "-c", "%a %u", "/paddock/state/events.jsonl", "/paddock/state"], { encoding: "utf8" });
      expect(mode.split("\n").filter(Boolean)).toEqual(["600 0", "700 0"]);
    }
    await daemon.runs.cancelRun({ runId: run.id });
    await watchToEnd(daemon, run.id, timeout);
  });
});

describe.runIf(isRoot)("local runs as root", () => {
  test("every process the agent starts dies with the run, however it daemonised", async ({ daemon, repo }) => {
    const tag = String(900_000 + Math.floor(Math.random() * 99_999));
    const script = `setsid nohup sleep ${tag}1 >/dev/null 2>&1 & (sh -c 'sleep ${tag}2 >/dev/null 2>&1 &' &) ; nohup sh -c 'trap "" TERM HUP; exec sleep ${tag}3' >/dev/null 2>&1 & echo spawned`;
    const run = await startRun(daemon, repo, "local", script);
    const final = (await watchToEnd(daemon, run.id)).pop()!;
    expect({ status: final.status, error: final.errorMessage }).toEqual({ status: RunStatus.COMPLETED, error: "" });
    expect(processesNaming(tag)).toEqual([]);
  });

  test("the agent cannot read the daemon's data dir: not the admin token, not the database", async ({ daemon, repo }) => {
    const script = `cat ${daemon.dataDir}/admin-token 2>&1; ls ${daemon.dataDir} 2>&1; head -c 100 ${daemon.dataDir}/paddock.db | base64 2>&1; echo end`;
    const run = await startRun(daemon, repo, "local", script);
    expect(run.agentIsolated).toBe(true); // the run says so
    await watchToEnd(daemon, run.id);
    const lines = (await allLogs(daemon, run.id)).filter((l) => l.stream !== "system").map((l) => l.text);
    const text = lines.join("\n");
    expect(lines).toContain("end");
    expect(text).not.toContain(daemon.adminToken);
    expect(lines).not.toContain("paddock.db"); // ls printed no listing
    expect(text).not.toContain("U1FMaXRlIGZvcm1hdCAz"); // base64 of "SQLite format 3"
    expect(text).toMatch(/Permission denied/);
    expect(statSync(daemon.dataDir).mode & 0o777).toBe(0o700);
  });
});

describe.runIf(dockerUp)("docker runs whose container died", () => {
  test("the work is still taken out (by the restarted runner, never by git on the host)", { timeout: 180_000 }, async ({ daemon, repo }) => {
    const dir = tempDir("marker");
    const marker = join(dir, "ran-as");
    try {
      const run = await startRun(daemon, repo, "docker", `${plantGitTraps(marker)}; echo planted; exec sleep 300`);
      await waitForPhase(daemon, run.id, "running", 120_000);
      for (let i = 0; i < 600 && !(await allLogs(daemon, run.id)).some((l) => l.text === "planted"); i++) await new Promise((r) => setTimeout(r, 100));
      execFileSync("docker", ["kill", containersOf(run.id)[0]!], { stdio: "ignore" });
      const final = (await watchToEnd(daemon, run.id, 180_000)).pop()!;
      expect(final.status).toBe(RunStatus.FAILED);
      rootNeverRan(marker);
      expect(existsSync(marker)).toBe(false);
      expect(sh(repo, "git", "show", `${final.resultBranch}:work.txt`)).toBe("left-uncommitted");
      expect(containersOf(run.id)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the container's configuration holds no sandbox token", { timeout: 180_000 }, async ({ daemon, repo }) => {
    const run = await startRun(daemon, repo, "docker", "exec sleep 300");
    await waitForPhase(daemon, run.id, "running", 120_000);
    const env = execFileSync("docker", ["inspect", "-f", "{{json .Config.Env}}", containersOf(run.id)[0]!], { encoding: "utf8" });
    expect(env).not.toMatch(/TOKEN/);
    expect(env).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\./); // no JWT of any name
    await daemon.runs.cancelRun({ runId: run.id });
    await watchToEnd(daemon, run.id, 120_000);
  });
});
