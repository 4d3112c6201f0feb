import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { describe, expect } from "vitest";
import { EnvironmentService } from "../src/gen/paddock/v1/environment_pb.js";
import { TaskService } from "../src/gen/paddock/v1/task_pb.js";
import { RunStatus, TaskRunService } from "../src/gen/paddock/v1/task_run_pb.js";
import { TokenService } from "../src/gen/paddock/v1/token_pb.js";
import { bearer, cleanUp, failureOf, startDaemon, test, waitForPhase, watchToEnd, type Daemon } from "./fixtures.js";

/** Clients with a token of `team`. */
async function teamClients(d: Daemon, team: string) {
  const admin = createClient(TokenService, createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(d.adminToken)] }));
  const { secret } = await admin.createToken({ team, name: team, scopes: ["tasks:read", "tasks:write", "runs:read", "runs:write"] });
  const transport = createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(secret)] });
  return { tasks: createClient(TaskService, transport), runs: createClient(TaskRunService, transport) };
}

const HOLD = ["sh", "-c", "echo up; exec sleep 300"];

describe("fair admission", () => {
  test("teams take turns for free slots, priority orders a team's own runs, a full queue pushes back, and a restart keeps the order", async ({ repo }) => {
    let daemon = await startDaemon({ config: { maxConcurrentRuns: 1, maxQueuedRunsPerTeam: 4 } });
    try {
      const red = { tasks: daemon.tasks, runs: daemon.runs }; // team "default"
      const blue = await teamClients(daemon, "blue");
      const redTask = (await red.tasks.createTask({ title: "red", repository: repo })).task!;
      const blueTask = (await blue.tasks.createTask({ title: "blue", repository: repo })).task!;
      const start = async (c: typeof red, taskId: string, priority = 0) => (await c.runs.startRun({ taskId, agentCommand: ["true"], priority })).run!;

      const holder = (await red.runs.startRun({ taskId: redTask.id, agentCommand: HOLD })).run!;
      await waitForPhase(daemon, holder.id, "running");
      const r1 = await start(red, redTask.id);
      const r2 = await start(red, redTask.id);
      const r3 = await start(red, redTask.id);
      const urgent = await start(red, redTask.id, 5);
      // Red's thousandth run would wait behind the rest; past its queue depth it is refused at once.
      const full = await failureOf(red.runs.startRun({ taskId: redTask.id, agentCommand: ["true"] }));
      expect(full.code).toBe(Code.ResourceExhausted);
      expect(full.rawMessage).toMatch(/team "default" has 4 queued runs.*--max-queued-runs-per-team/);
      // Blue is not refused, and is not behind red's whole queue.
      const b1 = await start(blue, blueTask.id);
      const b2 = await start(blue, blueTask.id);

      const expected = [urgent, b1, r1, b2, r2, r3].map((r) => r.id);
      const positions = async (d: Daemon) => {
        const out: Record<string, number> = {};
        for (const id of expected) {
          const client = [b1.id, b2.id].includes(id) ? blue : { runs: d.runs };
          const { run } = await client.runs.getRun({ runId: id });
          expect(run!.status).toBe(RunStatus.QUEUED);
          out[id] = run!.queuePosition;
        }
        return out;
      };
      const before = await positions(daemon);
      expect(expected.map((id) => before[id])).toEqual([1, 2, 3, 4, 5, 6]);
      expect((await red.runs.getRun({ runId: urgent.id })).run!.priority).toBe(5);

      // The daemon goes away and comes back: the queue is the same.
      await daemon.app.stop();
      daemon = await daemon.restart();
      const blueAgain = await teamClients(daemon, "blue");
      Object.assign(blue, blueAgain);
      expect(await positions(daemon)).toEqual(before);

      // One slot: each queued run starts only when the one before it is cleaned, so start
      // times give the order of admission.
      await daemon.runs.cancelRun({ runId: holder.id });
      const finals = await Promise.all(expected.map(async (id) => (await watchToEnd([b1.id, b2.id].includes(id) ? { ...daemon, runs: blue.runs } : daemon, id)).pop()!));
      expect(finals.every((r) => r.status === RunStatus.COMPLETED && r.queuePosition === 0)).toBe(true);
      const byStart = [...finals].sort((a, b) => Number(a.startTime!.seconds - b.startTime!.seconds) || a.startTime!.nanos - b.startTime!.nanos);
      expect(byStart.map((r) => r.id)).toEqual(expected);
    } finally {
      await cleanUp(daemon);
    }
  });

  test("an environment's own limit holds its runs in the queue while other runs start", async ({ repo }) => {
    const daemon = await startDaemon({ config: { maxConcurrentRuns: 4 } });
    try {
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", interceptors: [bearer(daemon.adminToken)] }));
      const { environment } = await envs.createEnvironment({ environment: { name: "narrow", maxConcurrentRuns: 1 } });
      expect(environment!.maxConcurrentRuns).toBe(1);
      const bad = await failureOf(envs.createEnvironment({ environment: { name: "negative", maxConcurrentRuns: -1 } }));
      expect(bad.rawMessage).toMatch(/^environment\.max_concurrent_runs: must be 0/);
      const task = (await daemon.tasks.createTask({ title: "t", repository: repo })).task!;
      const first = (await daemon.runs.startRun({ taskId: task.id, agentCommand: HOLD, environmentId: environment!.id })).run!;
      await waitForPhase(daemon, first.id, "running");
      const second = (await daemon.runs.startRun({ taskId: task.id, agentCommand: ["true"], environmentId: environment!.id })).run!;
      const other = (await daemon.runs.startRun({ taskId: task.id, agentCommand: ["true"] })).run!;
      expect((await watchToEnd(daemon, other.id)).pop()!.status).toBe(RunStatus.COMPLETED);
      const waiting = (await daemon.runs.getRun({ runId: second.id })).run!;
      expect(waiting).toMatchObject({ status: RunStatus.QUEUED, queuePosition: 1 });
      await daemon.runs.cancelRun({ runId: first.id });
      expect((await watchToEnd(daemon, second.id)).pop()!.status).toBe(RunStatus.COMPLETED);
    } finally {
      await cleanUp(daemon);
    }
  });
});
