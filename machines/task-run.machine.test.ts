import { describe, expect, it } from "vitest";
import { createActor, fromPromise, SimulatedClock, waitFor, type AnyActorLogic } from "xstate";
import {
  awaitingInput,
  phaseOf,
  taskRunMachine,
  type AgentExit,
  type TaskRunInput,
} from "./task-run.machine.js";

/** A promise actor whose settlement the test controls, recording how often it started. */
function controlled<T>() {
  const calls: string[] = [];
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const logic = fromPromise<T, { runId: string }>(({ input, signal }) => {
    calls.push(input.runId);
    return new Promise<T>((res, rej) => {
      resolve = res;
      reject = rej;
      signal.addEventListener("abort", () => rej(new Error("aborted")));
    });
  });
  return { logic, calls, resolve: (v: T) => resolve(v), reject: (e: unknown) => reject(e) };
}

function harness(deadlineInMs = 60 * 60_000, openPullRequest = false) {
  const clock = new SimulatedClock();
  clock.set(1_000_000);
  const provision = controlled<void>();
  const supervise = controlled<AgentExit>();
  const cleanup = controlled<void>();
  const publish = controlled<void>();
  const machine = taskRunMachine.provide({
    actors: {
      provision: provision.logic,
      supervise: supervise.logic,
      cleanup: cleanup.logic,
      publish: publish.logic,
    },
  });
  const input: TaskRunInput = { runId: "run_1", deadlineAt: clock.now() + deadlineInMs, openPullRequest };
  const start = (snapshot?: ReturnType<ReturnType<typeof createActor<typeof machine>>["getPersistedSnapshot"]>) => {
    const actor = createActor(machine as AnyActorLogic as typeof machine, snapshot ? { input, clock, snapshot } : { input, clock });
    actor.start();
    // The deadline's owner (src/runs/deadlines.ts in the daemon) sends DEADLINE at deadlineAt.
    const timer = clock.setTimeout(() => actor.send({ type: "DEADLINE" }), input.deadlineAt - clock.now());
    const stop = actor.stop.bind(actor);
    actor.stop = () => (clock.clearTimeout(timer), stop());
    return actor;
  };
  return { clock, provision, supervise, cleanup, publish, machine, start };
}

const phase = (a: { getSnapshot(): { value: unknown } }) => phaseOf(a.getSnapshot().value);
const settle = () => new Promise((r) => setImmediate(r));

describe("task-run machine", () => {
  it("goes queued → provisioning → running → completed → cleaned when the agent exits 0", async () => {
    const h = harness();
    const run = h.start();
    expect(phase(run)).toBe("queued");
    expect(h.provision.calls).toEqual([]);
    run.send({ type: "ADMIT" });
    expect(phase(run)).toBe("provisioning");
    h.provision.resolve();
    await waitFor(run, (s) => phaseOf(s.value) === "running");
    h.supervise.resolve({ exitCode: 0 });
    await waitFor(run, (s) => phaseOf(s.value) === "completed");
    expect(h.cleanup.calls).toEqual(["run_1"]);
    h.cleanup.resolve();
    const done = await waitFor(run, (s) => s.status === "done");
    expect(phaseOf(done.value)).toBe("cleaned");
    expect(done.context).toMatchObject({ outcome: "completed", exitCode: 0, error: null });
  });

  it("with open_pull_request, a completed run publishes after cleanup, across a restore, and a failure to publish keeps it completed", async () => {
    const h = harness(60 * 60_000, true);
    const run = h.start();
    run.send({ type: "ADMIT" });
    h.provision.resolve();
    await waitFor(run, (s) => phaseOf(s.value) === "running");
    h.supervise.resolve({ exitCode: 0 });
    await waitFor(run, (s) => phaseOf(s.value) === "completed");
    expect(h.publish.calls).toEqual([]); // the sandbox first
    h.cleanup.resolve();
    await waitFor(run, (s) => phaseOf(s.value) === "publishing");
    expect(h.publish.calls).toEqual(["run_1"]);
    // A restart in the middle: the restored run publishes again (the effect is idempotent).
    const persisted = run.getPersistedSnapshot();
    run.stop();
    const restored = h.start(persisted);
    expect(phase(restored)).toBe("publishing");
    await waitFor(restored, () => h.publish.calls.length === 2);
    h.publish.reject(new Error("GitHub answered 401"));
    const done = await waitFor(restored, (s) => s.status === "done");
    expect(done.context).toMatchObject({ outcome: "completed", error: null, pullRequestError: "GitHub answered 401" });
  });

  it("publishes nothing for a failed run, nor without open_pull_request", async () => {
    for (const [open, exitCode] of [[true, 1], [false, 0]] as const) {
      const h = harness(60 * 60_000, open);
      const run = h.start();
      run.send({ type: "ADMIT" });
      h.provision.resolve();
      await waitFor(run, (s) => phaseOf(s.value) === "running");
      h.supervise.resolve({ exitCode });
      await waitFor(run, (s) => ["completed", "failed"].includes(phaseOf(s.value)));
      h.cleanup.resolve();
      await waitFor(run, (s) => s.status === "done");
      expect(h.publish.calls).toEqual([]);
    }
  });

  it("fails with the exit code when the agent exits non-zero", async () => {
    const h = harness();
    const run = h.start();
    run.send({ type: "ADMIT" });
    h.provision.resolve();
    await waitFor(run, (s) => phaseOf(s.value) === "running");
    h.supervise.resolve({ exitCode: 3 });
    const s = await waitFor(run, (s) => phaseOf(s.value) === "failed");
    expect(s.context).toMatchObject({ outcome: "failed", exitCode: 3, error: "agent exited with code 3" });
  });

  it("fails with the setup script's exit code when setup fails", async () => {
    const h = harness();
    const run = h.start();
    run.send({ type: "ADMIT" });
    h.provision.resolve();
    await waitFor(run, (s) => phaseOf(s.value) === "running");
    h.supervise.resolve({ exitCode: 7, stage: "setup" });
    const s = await waitFor(run, (s) => phaseOf(s.value) === "failed");
    expect(s.context).toMatchObject({ outcome: "failed", exitCode: 7, error: "setup script exited with code 7" });
  });

  it("cleans up when cancelled while provisioning, and aborts the provisioning", async () => {
    const h = harness();
    const run = h.start();
    run.send({ type: "ADMIT" });
    run.send({ type: "CANCEL" });
    expect(phase(run)).toBe("cancelled");
    expect(h.cleanup.calls).toEqual(["run_1"]);
    h.cleanup.resolve();
    const s = await waitFor(run, (s) => s.status === "done");
    expect(s.context.outcome).toBe("cancelled");
  });

  it("cleans up when cancelled while queued, without provisioning", async () => {
    const h = harness();
    const run = h.start();
    run.send({ type: "CANCEL", reason: "cancelled by client" });
    expect(phase(run)).toBe("cancelled");
    expect(h.provision.calls).toEqual([]);
    expect(run.getSnapshot().context.error).toBe("cancelled by client");
  });

  it("fails and cleans up when provisioning fails", async () => {
    const h = harness();
    const run = h.start();
    run.send({ type: "ADMIT" });
    h.provision.reject(new Error("git clone failed"));
    const s = await waitFor(run, (s) => phaseOf(s.value) === "failed");
    expect(s.context.error).toBe("provisioning failed: git clone failed");
    expect(h.cleanup.calls).toEqual(["run_1"]);
  });

  it("fails with 'timed out' on DEADLINE, sent at the deadline on the simulated clock", async () => {
    const h = harness(30_000);
    const run = h.start();
    run.send({ type: "ADMIT" });
    h.provision.resolve();
    await waitFor(run, (s) => phaseOf(s.value) === "running");
    h.clock.increment(29_999);
    expect(phase(run)).toBe("running");
    h.clock.increment(1);
    expect(phase(run)).toBe("failed");
    expect(run.getSnapshot().context.error).toBe("timed out");
  });

  it("takes COMPLETE and SANDBOX_LOST while running", async () => {
    for (const [event, want] of [
      [{ type: "COMPLETE", status: "completed" } as const, { outcome: "completed", error: null }],
      [{ type: "COMPLETE", status: "failed", message: "tests red" } as const, { outcome: "failed", error: "tests red" }],
      [{ type: "SANDBOX_LOST", reason: "container gone" } as const, { outcome: "failed", error: "sandbox died: container gone" }],
    ] as const) {
      const h = harness();
      const run = h.start();
      expect(run.getSnapshot().can(event)).toBe(false);
      run.send({ type: "ADMIT" });
      h.provision.resolve();
      await waitFor(run, (s) => phaseOf(s.value) === "running");
      expect(run.getSnapshot().can(event)).toBe(true);
      run.send(event);
      expect(run.getSnapshot().context).toMatchObject(want);
    }
  });

  it("marks the run cleaned with the error when cleanup fails", async () => {
    const h = harness();
    const run = h.start();
    run.send({ type: "CANCEL" });
    h.cleanup.reject(new Error("rm: busy"));
    const s = await waitFor(run, (s) => s.status === "done");
    expect(s.context).toMatchObject({ outcome: "cancelled", cleanupError: "rm: busy" });
  });

  it("re-runs the invoked effect when restored from a persisted snapshot, and still takes its DEADLINE", async () => {
    const h = harness(10_000);
    const first = h.start();
    first.send({ type: "ADMIT" });
    h.provision.resolve();
    await waitFor(first, (s) => phaseOf(s.value) === "running");
    const persisted = JSON.parse(JSON.stringify(first.getPersistedSnapshot()));
    first.stop();
    expect(h.supervise.calls).toEqual(["run_1"]);

    const second = h.start(persisted);
    await settle();
    expect(phase(second)).toBe("running");
    expect(h.supervise.calls).toEqual(["run_1", "run_1"]);
    h.clock.increment(10_000);
    expect(phase(second)).toBe("failed");
    expect(second.getSnapshot().context.error).toBe("timed out");
  });

  it("an interactive run waits for input between turns, and is still running", async () => {
    const h = harness();
    const run = h.start();
    run.send({ type: "ADMIT" });
    h.provision.resolve();
    await waitFor(run, (s) => phaseOf(s.value) === "running");
    expect(awaitingInput(run.getSnapshot().value)).toBe(false);
    run.send({ type: "TURN_ENDED" });
    expect(phase(run)).toBe("running");
    expect(awaitingInput(run.getSnapshot().value)).toBe(true);
    expect(h.supervise.calls).toEqual(["run_1"]); // supervision goes on across turns
    run.send({ type: "PROMPTED" });
    expect(awaitingInput(run.getSnapshot().value)).toBe(false);
    run.send({ type: "TURN_ENDED" });
    // Waiting for input does not stop the deadline, CompleteRun or a cancel.
    h.clock.increment(60 * 60_000);
    await settle();
    expect(phase(run)).toBe("failed");
    expect(run.getSnapshot().context.error).toBe("timed out");
  });

  it("restores a snapshot persisted while awaiting input into that state", async () => {
    const h = harness();
    const run = h.start();
    run.send({ type: "ADMIT" });
    h.provision.resolve();
    await waitFor(run, (s) => phaseOf(s.value) === "running");
    run.send({ type: "TURN_ENDED" });
    const saved = run.getPersistedSnapshot();
    run.stop();
    const again = h.start(JSON.parse(JSON.stringify(saved)) as typeof saved);
    expect(awaitingInput(again.getSnapshot().value)).toBe(true);
    expect(h.supervise.calls).toEqual(["run_1", "run_1"]);
  });

  it("completes an interactive run left awaiting input past its idle timeout, and not before", async () => {
    const clock = new SimulatedClock();
    clock.set(1_000_000);
    const supervise = controlled<AgentExit>();
    const machine = taskRunMachine.provide({
      actors: {
        provision: fromPromise<void, { runId: string }>(async () => {}),
        supervise: supervise.logic,
        cleanup: fromPromise<void, { runId: string }>(async () => {}),
      },
    });
    const run = createActor(machine, { input: { runId: "run_1", deadlineAt: clock.now() + 3_600_000, idleMs: 60_000 }, clock });
    run.start();
    run.send({ type: "ADMIT" });
    await waitFor(run, (s) => phaseOf(s.value) === "running");
    run.send({ type: "TURN_ENDED" });
    clock.increment(59_000);
    run.send({ type: "PROMPTED" }); // came back in time: the timer stops
    run.send({ type: "TURN_ENDED" });
    clock.increment(59_000);
    expect(phase(run)).toBe("running");
    clock.increment(2_000);
    await waitFor(run, (s) => s.value === "cleaned");
    expect(run.getSnapshot().context.outcome).toBe("completed");
  });
});
