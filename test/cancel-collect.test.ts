import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect } from "vitest";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { Handoffs } from "../src/runs/handoffs.js";
import type { DockerProvider } from "../src/sandbox/docker/docker-provider.js";
import { createRunnerClient, type RunnerClient } from "../src/sandbox/runner-client.js";
import type { CleanupResult } from "../src/sandbox/provider.js";
import { allLogs, buildSandboxImage, cleanUp, type Daemon, dockerAvailable, sh, startDaemon, tempDir, test, waitForPhase, watchToEnd } from "./fixtures.js";

/**
 * Cancel on docker takes the agent's work and its handoff state in one runner call
 * (POST /collect), then removes the container while the work is imported. Real Docker,
 * real git, the sandbox image (PADDOCK_TEST_IMAGE names one of this checkout's runner).
 */

/** Leaves every kind of change: a commit, a staged file, an unstaged edit, an untracked file; then waits. */
const AGENT = [
  "sh",
  "-c",
  [
    "echo made > made.txt && git add made.txt && git -c user.name=a -c user.email=a@x commit -qm made",
    "echo staged > staged.txt && git add staged.txt",
    "echo changed >> README.md",
    "echo new > untracked.txt",
    "echo ready",
    "exec sleep 300",
  ].join(" && "),
];

async function untilReady(d: Daemon, runId: string): Promise<void> {
  await waitForPhase(d, runId, "running", 120_000);
  for (;;) {
    if ((await allLogs(d, runId)).some((l) => l.stream === "stdout" && l.text === "ready")) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

const containersOf = (runId: string) => execFileSync("docker", ["ps", "-aq", "--filter", `label=paddock.run=${runId}`], { encoding: "utf8" }).split("\n").filter(Boolean);

describe.runIf(dockerAvailable())("cancel on docker: one capture, the container removed while the work is imported", () => {
  beforeAll(buildSandboxImage, 600_000);

  test("a cancelled run keeps its uncommitted work on its branch and its handoff state, both from the same reading of its tree", async ({ daemon, repo }) => {
    const { task } = await daemon.tasks.createTask({ title: "cancel me", repository: repo });
    const { run } = await daemon.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: AGENT });
    await untilReady(daemon, run!.id);
    const [container] = containersOf(run!.id);
    const volumes = execFileSync("docker", ["inspect", "-f", "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}} {{end}}{{end}}", container!], { encoding: "utf8" }).trim().split(" ").filter(Boolean);
    expect(volumes).toHaveLength(1); // the runner's state
    await daemon.runs.cancelRun({ runId: run!.id });
    const final = (await watchToEnd(daemon, run!.id, 120_000)).pop()!;
    expect(final).toMatchObject({ status: RunStatus.CANCELLED, phase: "cleaned" });
    expect(containersOf(run!.id)).toEqual([]);
    // Removed as `docker rm -f` does, its state volume right after: nothing of it is left.
    expect(() => execFileSync("docker", ["volume", "inspect", volumes[0]!], { stdio: "ignore" })).toThrow();

    // The work: the agent's commit, and on top of it everything it left uncommitted.
    const result = final.resultCommit;
    expect(sh(repo, "git", "rev-parse", final.resultBranch)).toBe(result);
    expect(sh(repo, "git", "log", "-1", "--format=%s", result)).toBe(`paddock: uncommitted work left by run ${run!.id}`);
    expect(sh(repo, "git", "log", "-1", "--format=%s", `${result}^`)).toBe("made");
    for (const [file, text] of [["made.txt", "made"], ["staged.txt", "staged"], ["README.md", "hello\nchanged"], ["untracked.txt", "new"]]) {
      expect(sh(repo, "git", "show", `${result}:${file}`)).toBe(text);
    }
    // Only the run's own branch changed in the source.
    expect(sh(repo, "git", "for-each-ref", "--format=%(refname)").split("\n").sort()).toEqual(["refs/heads/feature", "refs/heads/main", `refs/heads/${final.resultBranch}`].sort());

    // The handoff state, kept: HEAD before the export's commit, the index as the agent left
    // it, and the working tree — the very tree the work's commit has.
    const kept = new Handoffs(join(daemon.dataDir, "handoffs"), 1 << 30).stored(run!.id)!;
    expect(kept).not.toBeNull();
    const m = kept.manifest;
    expect(m.head).toBe(sh(repo, "git", "rev-parse", `${result}^`));
    const scratch = tempDir("handoff-check");
    try {
      sh(scratch, "git", "init", "-q");
      sh(scratch, "git", "fetch", "-q", repo, result);
      sh(scratch, "git", "fetch", "-q", kept.bundle, "refs/paddock/handoff:refs/h/worktree");
      expect(sh(scratch, "git", "rev-parse", "refs/h/worktree")).toBe(m.worktree);
      expect(sh(scratch, "git", "rev-parse", `${m.worktree}^`)).toBe(m.index);
      expect(sh(scratch, "git", "rev-parse", `${m.index}^`)).toBe(m.head);
      expect(sh(scratch, "git", "show", `${m.index}:staged.txt`)).toBe("staged");
      expect(sh(scratch, "git", "show", `${m.index}:README.md`)).toBe("hello"); // the edit was not staged
      expect(sh(scratch, "git", "ls-tree", "--name-only", m.index)).not.toContain("untracked.txt");
      expect(sh(scratch, "git", "rev-parse", `${m.worktree}^{tree}`)).toBe(sh(repo, "git", "rev-parse", `${result}^{tree}`));
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
    // Nothing is left staged on the host.
    expect(readdirSync(join(daemon.dataDir, "cleanup"))).toEqual([]);
  });

  test("work staged when the daemon died, the container already gone, lands on the run's branch at the next cleanup", async ({ repo }) => {
    const first = await startDaemon();
    let daemon = first;
    try {
      const { task } = await daemon.tasks.createTask({ title: "die mid-cleanup", repository: repo });
      const { run } = await daemon.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: AGENT });
      const name = `paddock-${run!.id}-1`;
      await untilReady(daemon, run!.id);
      // The daemon stops (as a SIGKILL would leave things: the container running, the run not final).
      const provider = daemon.app.providers.get("docker") as DockerProvider;
      const internals = provider as unknown as {
        opts: { tokenFor: (runId: string) => Promise<string> };
        stageWork(name: string, runner: RunnerClient, o: { source: string; resultBranch: string; signal: AbortSignal; timeout: AbortSignal }): Promise<CleanupResult | null>;
      };
      const token = await internals.opts.tokenFor(run!.id);
      await daemon.app.stop();
      // What a cleanup did up to its crash: the work out of the runner and staged, then the
      // container removed — the import never ran.
      const endpoint = (await provider.inspect(name)).endpoint!;
      const signal = AbortSignal.timeout(60_000);
      expect(await internals.stageWork(name, createRunnerClient(endpoint, token), { source: repo, resultBranch: run!.resultBranch, signal, timeout: signal })).toBeNull();
      expect(JSON.parse(readFileSync(join(first.dataDir, "cleanup", name, "work.json"), "utf8"))).toMatchObject({ source: repo, resultBranch: run!.resultBranch });
      execFileSync("docker", ["rm", "-f", "-v", name]);
      expect(() => sh(repo, "git", "rev-parse", "--verify", "--quiet", run!.resultBranch)).toThrow();

      daemon = await first.restart();
      const final = (await watchToEnd(daemon, run!.id, 120_000)).pop()!;
      expect(final.phase).toBe("cleaned");
      expect(final.resultCommit).toMatch(/^[0-9a-f]{40}$/);
      expect(sh(repo, "git", "rev-parse", run!.resultBranch)).toBe(final.resultCommit);
      expect(sh(repo, "git", "show", `${final.resultCommit}:untracked.txt`)).toBe("new");
      expect(sh(repo, "git", "show", `${final.resultCommit}:made.txt`)).toBe("made");
      expect(existsSync(join(first.dataDir, "cleanup", name))).toBe(false);
    } finally {
      await cleanUp(daemon);
    }
  });
});
