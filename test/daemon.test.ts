import { durationFromMs, durationMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import Database from "better-sqlite3";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { describe, expect } from "vitest";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { alive, allLogs, cleanUp, type Daemon, failureOf, processesOf, sh, startDaemon, test, waitForPhase, watchToEnd } from "./fixtures.js";

async function newTask(d: Daemon, repo: string, title = "add a file") {
  const { task } = await d.tasks.createTask({ title, description: "write f.txt and commit it", repository: repo, origin: "test" });
  return task!;
}

const COMMITTING_AGENT = [
  "sh",
  "-c",
  'read -r prompt; echo "prompt: $prompt"; echo one; echo two >&2; echo three; echo work > f.txt; git add f.txt; git -c user.name=a -c user.email=a@x commit -qm "agent work"; echo done',
];

describe("a run on the local provider", () => {
  test("goes queued → in progress → completed → cleaned, streams its lines, and keeps its work on a branch", async ({ daemon, repo }) => {
    const task = await newTask(daemon, repo);
    expect(task.taskNumber).toBe(1n);
    const { run } = await daemon.runs.startRun({ taskId: task.id, agentCommand: COMMITTING_AGENT });
    // A free slot admits the run at once.
    expect(run!).toMatchObject({ status: RunStatus.IN_PROGRESS, phase: "provisioning" });
    expect(run!.deadline).toBeDefined();

    const seen = await watchToEnd(daemon, run!.id);
    const phases = [...new Set(seen.map((r) => r.phase))];
    expect(phases[phases.length - 1]).toBe("cleaned");
    expect(phases).toContain("completed");
    const final = seen[seen.length - 1]!;
    expect(final).toMatchObject({ status: RunStatus.COMPLETED, errorMessage: "", exitCode: 0, resultBranch: `paddock/${run!.id}` });
    expect(final.cleanedAt).toBeDefined();

    const lines = await allLogs(daemon, run!.id);
    expect(lines.map((l) => Number(l.seq))).toEqual(lines.map((_, i) => i + 1));
    // Two pipes: order holds within a stream, not across them.
    const of = (stream: string) => lines.filter((l) => l.stream === stream).map((l) => l.text);
    expect(of("stdout")).toEqual(["prompt: add a file", "one", "three", "done"]);
    expect(of("stderr")).toEqual(["two"]);

    // The agent's commit is on the result branch of the user's repository; the worktree is gone.
    expect(sh(repo, "git", "rev-parse", final.resultBranch)).toBe(final.resultCommit);
    expect(sh(repo, "git", "show", `${final.resultBranch}:f.txt`)).toBe("work");
    expect(sh(repo, "git", "worktree", "list").split("\n")).toHaveLength(1);
    expect(readdirSync(join(daemon.dataDir, "sandboxes"))).toEqual([]);
  });

  test("fails with the exit code when the agent fails, and commits what it left uncommitted", async ({ daemon, repo }) => {
    const task = await newTask(daemon, repo);
    const { run } = await daemon.runs.startRun({ taskId: task.id, branch: "feature", agentCommand: ["sh", "-c", "echo half > half.txt; echo oops >&2; exit 3"] });
    const final = (await watchToEnd(daemon, run!.id)).pop()!;
    expect(final).toMatchObject({ status: RunStatus.FAILED, errorMessage: "agent exited with code 3", exitCode: 3, phase: "cleaned" });
    expect(sh(repo, "git", "show", `${final.resultBranch}:half.txt`)).toBe("half");
    expect(sh(repo, "git", "merge-base", "--is-ancestor", "feature", final.resultBranch)).toBe("");
  });

  test("is cancelled while running: the agent is stopped and the sandbox cleaned", async ({ daemon, repo }) => {
    const task = await newTask(daemon, repo);
    const pidFile = join(repo, "..", `agent-${Date.now()}.pid`);
    const { run } = await daemon.runs.startRun({ taskId: task.id, agentCommand: ["sh", "-c", `echo $$ > ${pidFile}; echo started; exec sleep 300`] });
    await waitForLine(daemon, run!.id, "started");
    const cancelled = await daemon.runs.cancelRun({ runId: run!.id });
    expect(cancelled.run!.status).toBe(RunStatus.CANCELLED);
    const final = (await watchToEnd(daemon, run!.id)).pop()!;
    expect(final).toMatchObject({ status: RunStatus.CANCELLED, phase: "cleaned", errorMessage: "cancelled by client" });
    const pid = Number(readFileSync(pidFile, "utf8"));
    expect(alive(pid)).toBe(false);
  });

  test("is cancelled while provisioning (a clone that hangs) and still cleaned", async ({ daemon }) => {
    // A git server that accepts and never answers: provisioning hangs in git clone.
    const sockets: import("node:net").Socket[] = [];
    const hang: Server = createServer((s) => void sockets.push(s));
    await new Promise<void>((r) => hang.listen(0, "127.0.0.1", r));
    const port = (hang.address() as import("node:net").AddressInfo).port;
    try {
      const { task } = await daemon.tasks.createTask({ title: "hangs", repository: `git://127.0.0.1:${port}/repo.git` });
      const { run } = await daemon.runs.startRun({ taskId: task!.id, agentCommand: ["true"] });
      await waitForPhase(daemon, run!.id, "provisioning");
      await daemon.runs.cancelRun({ runId: run!.id });
      const final = (await watchToEnd(daemon, run!.id)).pop()!;
      expect(final).toMatchObject({ status: RunStatus.CANCELLED, phase: "cleaned" });
    } finally {
      sockets.forEach((s) => s.destroy());
      hang.close();
    }
  });

  test("fails and cleans up when provisioning fails (unknown branch)", async ({ daemon, repo }) => {
    const task = await newTask(daemon, repo);
    const { run } = await daemon.runs.startRun({ taskId: task.id, branch: "no-such-branch", agentCommand: ["true"] });
    const final = (await watchToEnd(daemon, run!.id)).pop()!;
    expect(final.status).toBe(RunStatus.FAILED);
    expect(final.errorMessage).toMatch(/^provisioning failed: branch "no-such-branch" not found/);
    expect(final.cleanedAt).toBeDefined();
  });

  test("fails with 'timed out' at its deadline", async ({ daemon, repo }) => {
    const task = await newTask(daemon, repo);
    const { run } = await daemon.runs.startRun({ taskId: task.id, timeout: durationFromMs(1500), agentCommand: ["sh", "-c", "echo waiting; exec sleep 300"] });
    const final = (await watchToEnd(daemon, run!.id)).pop()!;
    expect(final).toMatchObject({ status: RunStatus.FAILED, errorMessage: "timed out", phase: "cleaned" });
  });

  test("is completed or failed by CompleteRun, which a cleaned run refuses", async ({ daemon, repo }) => {
    const task = await newTask(daemon, repo);
    const { run } = await daemon.runs.startRun({ taskId: task.id, agentCommand: ["sh", "-c", "echo up; exec sleep 300"] });
    await waitForLine(daemon, run!.id, "up");
    const bad = await failureOf(daemon.runs.completeRun({ runId: run!.id, status: RunStatus.CANCELLED }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.rawMessage).toMatch(/^status: /);
    await daemon.runs.completeRun({ runId: run!.id, status: RunStatus.FAILED, errorMessage: "reviewer said no" });
    const final = (await watchToEnd(daemon, run!.id)).pop()!;
    expect(final).toMatchObject({ status: RunStatus.FAILED, errorMessage: "reviewer said no" });
    const again = await failureOf(daemon.runs.completeRun({ runId: run!.id, status: RunStatus.COMPLETED }));
    expect(again.code).toBe(Code.FailedPrecondition);
    expect(again.rawMessage).toContain("cleaned");
    expect((await failureOf(daemon.runs.cancelRun({ runId: run!.id }))).code).toBe(Code.FailedPrecondition);
  });

  test("queues beyond the concurrency limit and returns the same run for a repeated idempotency key", async ({ repo }) => {
    const daemon = await startDaemon({ config: { maxConcurrentRuns: 1 } });
    try {
      const task = await newTask(daemon, repo);
      const first = (await daemon.runs.startRun({ taskId: task.id, agentCommand: ["sh", "-c", "echo up; exec sleep 300"] })).run!;
      const second = (await daemon.runs.startRun({ taskId: task.id, agentCommand: ["true"], idempotencyKey: "k1" })).run!;
      const repeat = (await daemon.runs.startRun({ taskId: task.id, agentCommand: ["false"], idempotencyKey: "k1" })).run!;
      expect(repeat.id).toBe(second.id);
      await waitForLine(daemon, first.id, "up");
      expect((await daemon.runs.getRun({ runId: second.id })).run!.status).toBe(RunStatus.QUEUED);
      await daemon.runs.cancelRun({ runId: first.id });
      const final = (await watchToEnd(daemon, second.id)).pop()!;
      expect(final.status).toBe(RunStatus.COMPLETED);
      expect(final.runNumber).toBe(2n);
    } finally {
      await cleanUp(daemon);
    }
  });
});

describe("logs", () => {
  test("many followers see every line once, in order, across the replay → live hand-over", async ({ daemon, repo }) => {
    const task = await newTask(daemon, repo);
    const script = "i=1; while [ $i -le 60 ]; do echo line-$i; i=$((i+1)); [ $((i % 10)) -eq 0 ] && sleep 0.1; done";
    const { run } = await daemon.runs.startRun({ taskId: task.id, agentCommand: ["sh", "-c", script] });
    const follow = async (afterSeq: bigint, grpc: boolean) => {
      const client = grpc ? daemon.grpcRuns : daemon.runs;
      const got = [];
      for await (const res of client.streamLogs({ runId: run!.id, afterSeq, follow: true }, { timeoutMs: 60_000 })) got.push(...res.entries);
      return got;
    };
    await waitForLine(daemon, run!.id, "line-25");
    const [a, b, c] = await Promise.all([follow(0n, false), follow(0n, true), follow(5n, false)]);
    const texts = a.filter((l) => l.stream === "stdout").map((l) => l.text);
    expect(texts).toEqual(Array.from({ length: 60 }, (_, i) => `line-${i + 1}`));
    expect(a.map((l) => Number(l.seq))).toEqual(a.map((_, i) => i + 1));
    expect(b.map((l) => l.seq)).toEqual(a.map((l) => l.seq));
    expect(c.map((l) => l.seq)).toEqual(a.slice(5).map((l) => l.seq));
    expect(a[a.length - 1]!.text).toMatch(/removed$/);
  });
});

describe("the API", () => {
  test("rejects bad input naming the field, and unknown ids with NOT_FOUND", async ({ daemon, repo }) => {
    const cases: [Promise<unknown>, Code, RegExp][] = [
      [daemon.tasks.createTask({ title: "", repository: repo }), Code.InvalidArgument, /^title: is required/],
      [daemon.tasks.createTask({ title: "x", repository: "" }), Code.InvalidArgument, /^repository: is required/],
      [daemon.tasks.createTask({ title: "x", repository: "not a repo!" }), Code.InvalidArgument, /^repository: /],
      [daemon.tasks.createTask({ title: "x", repository: "/nonexistent/path" }), Code.InvalidArgument, /^repository: local path/],
      [daemon.tasks.createTask({ title: "x".repeat(201), repository: repo }), Code.InvalidArgument, /^title: is 201 characters/],
      [daemon.tasks.getTask({ taskId: "task_nope" }), Code.NotFound, /task "task_nope" not found/],
      [daemon.runs.getRun({ runId: "run_nope" }), Code.NotFound, /run "run_nope" not found/],
      [daemon.runs.startRun({ taskId: "task_nope", agentCommand: ["true"] }), Code.NotFound, /task "task_nope"/],
      [daemon.tasks.listTasks({ pageToken: "garbage" }), Code.InvalidArgument, /^page_token: /],
      [daemon.tasks.listTasks({ pageSize: 5000 }), Code.InvalidArgument, /^page_size: /],
    ];
    for (const [call, code, message] of cases) {
      const e = await failureOf(call);
      expect({ code: Code[e.code], message: e.rawMessage }).toMatchObject({ code: Code[code], message: expect.stringMatching(message) });
    }
    const task = await newTask(daemon, repo);
    const more: [Promise<unknown>, RegExp][] = [
      [daemon.runs.startRun({ taskId: task.id }), /^agent_command: no agent command given/],
      [daemon.runs.startRun({ taskId: task.id, agentCommand: ["true"], provider: "kubernetes" }), /^provider: unknown provider "kubernetes"/],
      [daemon.runs.startRun({ taskId: task.id, agentCommand: ["true"], branch: "bad..name" }), /^branch: /],
      [daemon.runs.startRun({ taskId: task.id, agentCommand: ["true"], timeout: durationFromMs(25 * 3600_000) }), /^timeout: /],
      [daemon.runs.startRun({ taskId: task.id, agentCommand: ["true"], limits: { cpus: -1 } }), /^limits.cpus: /],
      [daemon.runs.startRun({ taskId: task.id, agentCommand: ["true"], limits: { pids: 4 } }), /^limits.pids: /],
      [daemon.runs.startRun({ taskId: task.id, agentCommand: ["true"], limits: { cpus: 1 } }), /^limits: the local provider .* cannot apply sandbox limits/],
    ];
    for (const [call, message] of more) {
      const e = await failureOf(call);
      expect(e.code).toBe(Code.InvalidArgument);
      expect(e.rawMessage).toMatch(message);
    }
    const { runs } = await daemon.runs.listRuns({});
    expect(runs).toEqual([]);
  });

  test("paginates tasks newest first with opaque page tokens", async ({ daemon, repo }) => {
    for (let i = 1; i <= 5; i++) await newTask(daemon, repo, `task ${i}`);
    const titles: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const res = await daemon.tasks.listTasks({ pageSize: 2, pageToken });
      titles.push(...res.tasks.map((t) => t.title));
      pageToken = res.nextPageToken;
      pages++;
    } while (pageToken);
    expect(pages).toBe(3);
    expect(titles).toEqual(["task 5", "task 4", "task 3", "task 2", "task 1"]);
  });

  test("an internal failure reaches the client as a bare 'internal error' and is logged whole", async ({ daemon, repo }) => {
    await newTask(daemon, repo);
    // Break the store underneath the daemon: a table it reads is gone.
    const db = new Database(join(daemon.dataDir, "paddock.db"));
    db.exec("ALTER TABLE tasks RENAME TO tasks_moved");
    db.close();
    const e = await failureOf(daemon.tasks.listTasks({}));
    expect(e.code).toBe(Code.Internal);
    expect(e.rawMessage).toBe("internal error");
    expect(JSON.stringify(e)).not.toMatch(/tasks|sqlite|SELECT/i);
    expect(daemon.logs.join("\n")).toMatch(/no such table: tasks/);
    const fix = new Database(join(daemon.dataDir, "paddock.db"));
    fix.exec("ALTER TABLE tasks_moved RENAME TO tasks");
    fix.close();
  });
});

describe("restarts", () => {
  test("a daemon stopped mid-run resumes it: the run finishes with every line exactly once", async ({ repo }) => {
    let daemon = await startDaemon();
    try {
      const task = await newTask(daemon, repo);
      const script = "i=1; while [ $i -le 40 ]; do echo line-$i; i=$((i+1)); sleep 0.05; done";
      const { run } = await daemon.runs.startRun({ taskId: task.id, agentCommand: ["sh", "-c", script] });
      await waitForLine(daemon, run!.id, "line-10");
      await daemon.app.stop(); // the runner keeps going without us
      const stoppedAt = Date.now();
      daemon = await daemon.restart();
      const final = (await watchToEnd(daemon, run!.id)).pop()!;
      expect(final).toMatchObject({ status: RunStatus.COMPLETED, phase: "cleaned" });
      // The phase the restart interrupted is timed from its real start, downtime included.
      expect(final.phaseTimings.map((t) => t.phase)).toEqual(["queued", "provisioning", "running", "cleanup"]);
      const running = final.phaseTimings[2]!;
      expect(timestampMs(running.startTime!)).toBeLessThan(stoppedAt);
      expect(timestampMs(running.startTime!) + durationMs(running.duration!)).toBeGreaterThan(stoppedAt);
      const lines = await allLogs(daemon, run!.id);
      expect(lines.filter((l) => l.stream === "stdout").map((l) => l.text)).toEqual(Array.from({ length: 40 }, (_, i) => `line-${i + 1}`));
      expect(lines.map((l) => Number(l.seq))).toEqual(lines.map((_, i) => i + 1));
      expect(lines.some((l) => l.text.startsWith("daemon restarted"))).toBe(true);
    } finally {
      await cleanUp(daemon);
    }
  });

  test("a run whose sandbox died while the daemon was down fails and is cleaned", async ({ repo }) => {
    let daemon = await startDaemon();
    try {
      const task = await newTask(daemon, repo);
      const { run } = await daemon.runs.startRun({ taskId: task.id, agentCommand: ["sh", "-c", "echo up; exec sleep 300"] });
      await waitForLine(daemon, run!.id, "up");
      await daemon.app.stop();
      const state = join(daemon.dataDir, "sandboxes", `paddock-${run!.id}-1`, "state");
      const info = JSON.parse(readFileSync(join(state, "runner.json"), "utf8")) as { pid: number; agentPid: number };
      process.kill(-info.agentPid, "SIGKILL");
      process.kill(-info.pid, "SIGKILL");
      daemon = await daemon.restart();
      const final = (await watchToEnd(daemon, run!.id)).pop()!;
      expect(final.status).toBe(RunStatus.FAILED);
      expect(final.errorMessage).toMatch(/^sandbox died: /);
      expect(existsSync(state)).toBe(false);
      // Cleanup brought a runner back to read the last events and take the work out; it is gone too.
      expect((await allLogs(daemon, run!.id)).map((l) => l.text)).toContain("paddock: the runner restarted; the agent it was running is gone");
      for (let i = 0; i < 40 && processesOf([run!.id]).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect(processesOf([run!.id])).toEqual([]);
    } finally {
      await cleanUp(daemon);
    }
  });
});

async function waitForLine(d: Daemon, runId: string, text: string): Promise<void> {
  for await (const res of d.runs.streamLogs({ runId, follow: true }, { timeoutMs: 30_000 })) {
    if (res.entries.some((l) => l.text === text)) return;
  }
  throw new Error(`run ${runId} ended without printing ${text}`);
}
