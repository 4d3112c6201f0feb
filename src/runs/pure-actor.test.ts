import { describe, expect, it } from "vitest";
import { phaseOf, taskRunMachine } from "../../machines/task-run.machine.js";
import { PureActor, type Effects, type RunSnapshot } from "./pure-actor.js";

/** Effects whose settlement the test controls, recording each start and abort. */
function controlled() {
  const started: string[] = [];
  const aborted: string[] = [];
  const settle = new Map<string, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  const effect = (src: string) => (_input: unknown, signal: AbortSignal) =>
    new Promise<unknown>((resolve, reject) => {
      started.push(src);
      settle.set(src, { resolve, reject });
      signal.addEventListener("abort", () => aborted.push(src), { once: true });
    });
  const effects: Effects = { provision: effect("provision"), supervise: effect("supervise"), cleanup: effect("cleanup"), publish: effect("publish") };
  return { effects, started, aborted, settle };
}

const tick = () => new Promise((r) => setImmediate(r));
const input = { runId: "run_1", deadlineAt: Date.now() + 3_600_000 };

function make(effects: Effects, extra: Partial<typeof input & { idleMs: number }> = {}) {
  const seen: string[] = [];
  const errors: unknown[] = [];
  const actor = PureActor.create(taskRunMachine, effects, { ...input, ...extra }, (s: RunSnapshot) => seen.push(phaseOf(s.value)), (e) => errors.push(e));
  actor.start();
  return { actor, seen, errors, phase: () => phaseOf(actor.getSnapshot().value) };
}

describe("PureActor", () => {
  it("starts an invoked effect on entry, takes its end as XState's done/error event, and aborts it when its state is left", async () => {
    const h = controlled();
    const run = make(h.effects);
    expect(h.started).toEqual([]);
    run.actor.send({ type: "ADMIT" });
    expect(h.started).toEqual(["provision"]);
    h.settle.get("provision")!.resolve(undefined);
    await tick();
    expect(run.phase()).toBe("running");
    expect(h.started).toEqual(["provision", "supervise"]);
    run.actor.send({ type: "CANCEL", reason: "stop" });
    expect(h.aborted).toEqual(["supervise"]);
    // The aborted effect's late end is not the machine's business any more.
    h.settle.get("supervise")!.resolve({ exitCode: 0 });
    await tick();
    expect(run.actor.getSnapshot().context).toMatchObject({ outcome: "cancelled", error: "stop" });
    h.settle.get("cleanup")!.reject(new Error("rm: busy"));
    await tick();
    expect(run.phase()).toBe("cleaned");
    expect(run.actor.getSnapshot().context.cleanupError).toBe("rm: busy");
    expect(run.seen).toEqual(["queued", "provisioning", "running", "cancelled", "cleaned"]);
    expect(run.errors).toEqual([]);
  });

  it("takes events sent from inside a step after it, in order, and drops events after stop", async () => {
    const h = controlled();
    const self: { actor?: PureActor } = {};
    // An effect that reports at once, before the step that started it is over.
    const effects: Effects = { ...h.effects, provision: async () => self.actor!.send({ type: "CANCEL", reason: "at once" }) };
    const run = make(effects);
    self.actor = run.actor;
    run.actor.send({ type: "ADMIT" });
    await tick();
    expect(run.seen).toEqual(["queued", "provisioning", "cancelled"]);
    run.actor.stop();
    expect(h.aborted).toEqual(["cleanup"]);
    run.actor.send({ type: "DEADLINE" });
    expect(run.seen).toHaveLength(3);
  });

  it("runs a delayed transition (after) as a timer, cancelled when its state is left", async () => {
    const h = controlled();
    const run = make(h.effects, { idleMs: 30 });
    run.actor.send({ type: "ADMIT" });
    h.settle.get("provision")!.resolve(undefined);
    await tick();
    run.actor.send({ type: "TURN_ENDED" });
    run.actor.send({ type: "PROMPTED" }); // back before the idle timeout: no completion
    await new Promise((r) => setTimeout(r, 60));
    expect(run.phase()).toBe("running");
    run.actor.send({ type: "TURN_ENDED" });
    await new Promise((r) => setTimeout(r, 60));
    expect(run.actor.getSnapshot().context.outcome).toBe("completed");
  });

  it("restores a version-1 snapshot without its deadline child and starts the stored effects again", () => {
    const h = controlled();
    const v1 = {
      status: "active",
      value: { active: "provisioning" },
      historyValue: {},
      context: { runId: "run_1", deadlineAt: 1, idleMs: 0, outcome: null, error: null, exitCode: null, cleanupError: null, openPullRequest: false, pullRequestError: null },
      children: {
        "0.taskRun.active": { snapshot: { status: "active", input: { deadlineAt: 1 } }, src: "deadline", syncSnapshot: false },
        "0.taskRun.active.provisioning": { snapshot: { status: "active", input: { runId: "run_1" } }, src: "provision", syncSnapshot: false },
      },
    };
    const seen: string[] = [];
    const actor = PureActor.restore(taskRunMachine, h.effects, v1, (s) => seen.push(phaseOf(s.value)), () => {});
    expect(Object.keys(actor.getSnapshot().children)).toEqual(["0.taskRun.active.provisioning"]);
    actor.start();
    expect(h.started).toEqual(["provision"]);
    expect(seen).toEqual(["provisioning"]);
    expect(JSON.stringify(actor.getPersistedSnapshot())).not.toContain("deadline\"");
    actor.send({ type: "DEADLINE" });
    expect(actor.getSnapshot().context.error).toBe("timed out");
    expect(h.aborted).toEqual(["provision"]);
  });
});
