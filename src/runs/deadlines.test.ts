import { describe, expect, it } from "vitest";
import { SimulatedClock } from "xstate";
import { Deadlines } from "./deadlines.js";

function clocked() {
  const clock = new SimulatedClock();
  clock.set(1_000_000);
  const due: string[] = [];
  const deadlines = new Deadlines(clock, (id) => due.push(id));
  return { clock, due, deadlines };
}

describe("Deadlines", () => {
  it("fires each run at its time, earliest first, on one timer", () => {
    const { clock, due, deadlines } = clocked();
    deadlines.set("b", 1_000_300);
    deadlines.set("a", 1_000_100);
    deadlines.set("c", 1_000_300);
    clock.increment(99);
    expect(due).toEqual([]);
    clock.increment(1);
    expect(due).toEqual(["a"]);
    clock.increment(200);
    expect(due.sort()).toEqual(["a", "b", "c"]);
    expect(deadlines.size).toBe(0);
  });

  it("does not fire a run that was deleted, or at the time it was moved from", () => {
    const { clock, due, deadlines } = clocked();
    deadlines.set("gone", 1_000_050);
    deadlines.set("moved", 1_000_050);
    deadlines.set("moved", 1_000_500);
    deadlines.delete("gone");
    clock.increment(100);
    expect(due).toEqual([]);
    clock.increment(400);
    expect(due).toEqual(["moved"]);
  });

  it("fires a deadline already past at once (a run restored after it), and one beyond setTimeout's range when it comes", () => {
    const { clock, due, deadlines } = clocked();
    deadlines.set("late", 999_000);
    clock.increment(0);
    expect(due).toEqual(["late"]);
    const month = 31 * 24 * 3600_000; // more than 2^31-1 ms: setTimeout alone would fire at once
    deadlines.set("far", 1_000_000 + month);
    clock.increment(month - 1);
    expect(due).toEqual(["late"]);
    clock.increment(1);
    expect(due).toEqual(["late", "far"]);
  });

  it("keeps few stale entries when runs finish long before their deadlines", () => {
    const { clock, due, deadlines } = clocked();
    for (let i = 0; i < 5000; i++) {
      deadlines.set(`r${i}`, 1_000_000 + 3600_000 + i);
      deadlines.delete(`r${i}`);
    }
    deadlines.set("last", 1_000_000 + 3600_000);
    expect((deadlines as unknown as { heap: unknown[] }).heap.length).toBeLessThan(2100);
    clock.increment(3600_000);
    expect(due).toEqual(["last"]);
  });
});
