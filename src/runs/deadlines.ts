import type { TimerClock } from "../../machines/task-run.machine.js";

// setTimeout overflows above 2^31-1 ms (about 24.8 days) and fires at once; re-arm instead.
const MAX_TIMER_MS = 2_147_483_647;

/**
 * Every live run's deadline on one timer: a min-heap by time, the timer armed for the
 * earliest. A timer (or an XState child actor) per run cost more than the rest of a short
 * run's bookkeeping. The times are absolute and stored with the run, so a restart sets
 * them again from the store.
 */
export class Deadlines {
  /** [at, id] by at; entries whose run left (or moved) are skipped when they come up. */
  private readonly heap: [number, string][] = [];
  private readonly due = new Map<string, number>();
  private timer: unknown;
  private armedAt = Infinity;

  constructor(
    private readonly clock: TimerClock,
    private readonly onDue: (id: string) => void,
  ) {}

  /** The run `id` is due at `at` (epoch ms); it replaces an earlier time for it. */
  set(id: string, at: number): void {
    this.due.set(id, at);
    this.push([at, id]);
    if (at < this.armedAt) this.arm();
  }

  delete(id: string): void {
    this.due.delete(id);
    // Its heap entry goes when it comes up (the timer may fire once for nothing), or here
    // when most entries are stale: finished runs must not pile up until their hour is past.
    if (this.heap.length > 1024 && this.heap.length > 2 * this.due.size) {
      this.heap.length = 0;
      for (const [run, at] of this.due) this.push([at, run]);
    }
  }

  get size(): number {
    return this.due.size;
  }

  /** Clears the timer; the times are kept in the store, not here. */
  stop(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.armedAt = Infinity;
    this.heap.length = 0;
    this.due.clear();
  }

  private arm(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.armedAt = Infinity;
    const first = this.heap[0];
    if (!first) return;
    this.armedAt = first[0];
    this.timer = this.clock.setTimeout(() => this.fire(), Math.max(0, Math.min(first[0] - this.clock.now(), MAX_TIMER_MS)));
  }

  private fire(): void {
    this.timer = undefined;
    const now = this.clock.now();
    const fired: string[] = [];
    while (this.heap.length > 0 && this.heap[0]![0] <= now) {
      const [at, id] = this.pop();
      if (this.due.get(id) !== at) continue; // gone, or moved
      this.due.delete(id);
      fired.push(id);
    }
    this.arm();
    for (const id of fired) this.onDue(id);
  }

  private push(entry: [number, string]): void {
    const h = this.heap;
    h.push(entry);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent]![0] <= h[i]![0]) break;
      [h[parent], h[i]] = [h[i]!, h[parent]!];
      i = parent;
    }
  }

  private pop(): [number, string] {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let min = i;
        if (l < h.length && h[l]![0] < h[min]![0]) min = l;
        if (r < h.length && h[r]![0] < h[min]![0]) min = r;
        if (min === i) break;
        [h[min], h[i]] = [h[i]!, h[min]!];
        i = min;
      }
    }
    return top;
  }
}
