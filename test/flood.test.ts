import { execFileSync } from "node:child_process";
import { describe, expect } from "vitest";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { cleanUp, dockerAvailable, makeGitRepo, startDaemon, test, waitForPhase, watchToEnd, type Daemon } from "./fixtures.js";

/**
 * Hostile output: floods and long lines never cost a run its log. Every line is stored, or
 * a stored note says exactly how many were dropped past the budget.
 */
async function storedLines(d: Daemon, runId: string): Promise<{ stdout: number; notes: string[]; lastStdout: string }> {
  let stdout = 0;
  let lastStdout = "";
  const notes: string[] = [];
  for await (const res of d.grpcRuns.streamLogs({ runId, follow: false })) {
    for (const l of res.entries) {
      if (l.stream === "stdout") {
        stdout++;
        lastStdout = l.text;
      } else if (l.text.startsWith("paddock: ")) notes.push(l.text);
    }
  }
  return { stdout, notes, lastStdout };
}

describe("a flood of output", () => {
  test("past the log budget lines are dropped, and the log says exactly how many", { timeout: 240_000 }, async ({ repo }) => {
    const daemon = await startDaemon({ config: { logMaxLines: "100000" } });
    try {
      const { task } = await daemon.tasks.createTask({ title: "flood", repository: repo });
      // 300,000 lines "line N": the first 100,000 are kept.
      const { run } = await daemon.runs.startRun({ taskId: task!.id, provider: "local", agentCommand: ["sh", "-c", "seq -f 'line %.0f' 1 300000"] });
      const final = (await watchToEnd(daemon, run!.id, 240_000)).pop()!;
      expect(final.status).toBe(RunStatus.COMPLETED);
      const { stdout, notes, lastStdout } = await storedLines(daemon, run!.id);
      expect(stdout).toBe(100_000);
      expect(lastStdout).toBe("line 100000");
      const droppedBytes = Array.from({ length: 200_000 }, (_, i) => `line ${100_001 + i}`.length).reduce((a, b) => a + b, 0);
      expect(notes).toContain(`paddock: 200000 lines (${droppedBytes} bytes) were dropped past the log budget`);
    } finally {
      await cleanUp(daemon);
    }
  });

  test.runIf(dockerAvailable())("in a 512 MiB docker sandbox stores every line of 200 MB of output", { timeout: 600_000 }, async () => {
    const repo = makeGitRepo();
    const daemon = await startDaemon({ config: { dockerMemory: "512m" } });
    try {
      const { task } = await daemon.tasks.createTask({ title: "flood", repository: repo });
      // 2,000,000 lines of 100 bytes, as fast as the agent can write them.
      const script = "awk 'BEGIN { s = sprintf(\"%090d\", 0); for (i = 1; i <= 2000000; i++) printf \"%09d %s\\n\", i, s }'";
      const { run } = await daemon.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["sh", "-c", script] });
      const final = (await watchToEnd(daemon, run!.id, 600_000)).pop()!;
      expect(final.status).toBe(RunStatus.COMPLETED);
      const { stdout, notes, lastStdout } = await storedLines(daemon, run!.id);
      expect(notes).toEqual([]);
      expect(stdout).toBe(2_000_000);
      expect(lastStdout.slice(0, 9)).toBe("002000000");
    } finally {
      await cleanUp(daemon);
      execFileSync("rm", ["-rf", repo]);
    }
  });

  test.runIf(dockerAvailable())("of 1 GB in a 512 MiB docker sandbox: the budget's lines stored, and exactly how many were dropped", { timeout: 600_000 }, async () => {
    const repo = makeGitRepo();
    const daemon = await startDaemon({ config: { dockerMemory: "512m", logMaxLines: "1000000" } });
    try {
      const { task } = await daemon.tasks.createTask({ title: "flood", repository: repo });
      // 10,000,000 lines of 100 bytes: 1 GB.
      const script = "awk 'BEGIN { s = sprintf(\"%090d\", 0); for (i = 1; i <= 10000000; i++) printf \"%09d %s\\n\", i, s }'";
      const { run } = await daemon.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["sh", "-c", script] });
      const final = (await watchToEnd(daemon, run!.id, 600_000)).pop()!;
      expect(final.status).toBe(RunStatus.COMPLETED);
      const { stdout, notes, lastStdout } = await storedLines(daemon, run!.id);
      expect(stdout).toBe(1_000_000);
      expect(lastStdout.slice(0, 9)).toBe("001000000");
      expect(notes).toContain("paddock: 9000000 lines (900000000 bytes) were dropped past the log budget");
    } finally {
      await cleanUp(daemon);
      execFileSync("rm", ["-rf", repo]);
    }
  });

  test.runIf(dockerAvailable())("recorded by a runner whose container then died reaches the store", { timeout: 300_000 }, async () => {
    const repo = makeGitRepo();
    const first = await startDaemon();
    let daemon = first;
    try {
      const { task } = await daemon.tasks.createTask({ title: "die", repository: repo });
      // It prints only once the daemon is down, so nothing of it is stored before the death.
      const script = "while [ ! -e /tmp/go ]; do sleep 0.1; done; i=0; while [ $i -lt 20000 ]; do echo line-$i; i=$((i+1)); done; echo done-printing; exec sleep 300";
      const { run } = await daemon.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["sh", "-c", script] });
      await waitForPhase(daemon, run!.id, "running", 120_000);
      await daemon.app.stop(); // nobody reads the runner now
      const container = execFileSync("docker", ["ps", "-q", "--filter", `label=paddock.run=${run!.id}`], { encoding: "utf8" }).trim();
      execFileSync("docker", ["exec", container, "touch", "/tmp/go"]);
      for (let i = 0; i < 600; i++) {
        const seen = execFileSync("docker", ["exec", container, "sh", "-c", "grep -c done-printing /paddock/state/events.jsonl || true"], { encoding: "utf8" }).trim();
        if (seen === "1") break;
        await new Promise((r) => setTimeout(r, 100));
      }
      execFileSync("docker", ["kill", container], { stdio: "ignore" }); // as an OOM kill would
      daemon = await first.restart();
      const final = (await watchToEnd(daemon, run!.id, 180_000)).pop()!;
      expect(final.status).toBe(RunStatus.FAILED);
      const texts: string[] = [];
      for await (const res of daemon.runs.streamLogs({ runId: run!.id, follow: false })) texts.push(...res.entries.filter((l) => l.stream === "stdout").map((l) => l.text));
      expect(texts).toEqual([...Array.from({ length: 20000 }, (_, i) => `line-${i}`), "done-printing"]);
    } finally {
      await cleanUp(daemon);
      execFileSync("rm", ["-rf", repo]);
    }
  });
});
