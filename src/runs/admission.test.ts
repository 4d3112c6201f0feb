import { describe, expect, it } from "vitest";
import { FairQueue, Gate } from "./admission.js";

const noLimits = { perTeam: 0, perEnvironment: () => 0 };

function drain(q: FairQueue): string[] {
  const out: string[] = [];
  for (let w = q.take(); w; w = q.take()) out.push(w.id);
  return out;
}

describe("FairQueue", () => {
  it("gives teams turns: one team's thousand queued runs do not starve another's", () => {
    const q = new FairQueue(noLimits);
    for (let i = 0; i < 1000; i++) q.add({ id: `a${i}`, team: "a", environmentId: "", priority: 0 });
    q.add({ id: "b0", team: "b", environmentId: "", priority: 0 });
    q.add({ id: "b1", team: "b", environmentId: "", priority: 0 });
    expect(q.position("b0")).toBe(2);
    expect(q.position("b1")).toBe(4);
    expect(drain(q).slice(0, 5)).toEqual(["a0", "b0", "a1", "b1", "a2"]);
  });

  it("orders a team's runs by priority, then by arrival", () => {
    const q = new FairQueue(noLimits);
    q.add({ id: "low", team: "t", environmentId: "", priority: 0 });
    q.add({ id: "high", team: "t", environmentId: "", priority: 5 });
    q.add({ id: "low2", team: "t", environmentId: "", priority: 0 });
    q.add({ id: "high2", team: "t", environmentId: "", priority: 5 });
    expect(q.position("low")).toBe(3);
    expect(drain(q)).toEqual(["high", "high2", "low", "low2"]);
  });

  it("passes over a team at its limit until one of its runs leaves a slot", () => {
    const q = new FairQueue({ perTeam: 1, perEnvironment: () => 0 });
    for (const id of ["a0", "a1"]) q.add({ id, team: "a", environmentId: "", priority: 0 });
    q.add({ id: "b0", team: "b", environmentId: "", priority: 0 });
    expect(drain(q)).toEqual(["a0", "b0"]);
    expect(q.take()).toBeUndefined();
    q.release({ team: "a", environmentId: "" });
    expect(q.take()?.id).toBe("a1");
  });

  it("passes over runs of an environment at its limit, keeping their place", () => {
    const q = new FairQueue({ perTeam: 0, perEnvironment: (e) => (e === "env_small" ? 1 : 0) });
    q.add({ id: "s0", team: "t", environmentId: "env_small", priority: 0 });
    q.add({ id: "s1", team: "t", environmentId: "env_small", priority: 0 });
    q.add({ id: "x0", team: "t", environmentId: "env_big", priority: 0 });
    expect(drain(q)).toEqual(["s0", "x0"]);
    expect(q.position("s1")).toBe(1);
    q.release({ team: "t", environmentId: "env_small" });
    expect(q.take()?.id).toBe("s1");
  });

  it("counts restored runs in slots against the limits", () => {
    const q = new FairQueue({ perTeam: 1, perEnvironment: () => 0 });
    q.hold({ team: "a", environmentId: "" });
    q.add({ id: "a1", team: "a", environmentId: "", priority: 0 });
    expect(q.take()).toBeUndefined();
  });

  it("forgets a run removed while queued", () => {
    const q = new FairQueue(noLimits);
    q.add({ id: "a0", team: "a", environmentId: "", priority: 0 });
    q.add({ id: "a1", team: "a", environmentId: "", priority: 0 });
    expect(q.remove("a0")).toBe(true);
    expect(q.position("a1")).toBe(1);
    expect(q.size).toBe(1);
    expect(drain(q)).toEqual(["a1"]);
    expect(q.position("a1")).toBe(0);
  });
});

describe("Gate", () => {
  it("runs at most its size at once, the rest in arrival order", async () => {
    const gate = new Gate(2);
    let active = 0;
    let peak = 0;
    const started: number[] = [];
    const releases: (() => void)[] = [];
    const tasks = Array.from({ length: 5 }, (_, i) =>
      gate.run(async () => {
        started.push(i);
        peak = Math.max(peak, ++active);
        await new Promise<void>((r) => releases.push(r));
        active--;
      }),
    );
    while (started.length < 5) {
      await new Promise((r) => setImmediate(r));
      releases.shift()?.();
    }
    releases.forEach((r) => r());
    await Promise.all(tasks);
    expect(peak).toBe(2);
    expect(started).toEqual([0, 1, 2, 3, 4]);
  });
});
