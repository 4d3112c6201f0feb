/**
 * Fair admission: which queued run takes the next free slot.
 *
 * Teams take turns (round-robin: the team served longest ago goes first, a team new to the
 * queue joins at the end of the round); within a team the highest priority goes first, then
 * the oldest. A team or environment at its concurrency limit is passed over without losing
 * its place. Pure and synchronous: the manager owns the slots and the actors.
 */

export interface Waiting {
  id: string;
  team: string;
  environmentId: string;
  priority: number;
}

interface Entry extends Waiting {
  /** Arrival order, the tie-breaker within a priority. */
  order: number;
}

export interface Limits {
  /** Runs in a slot at once per team; 0 for no limit but the daemon's. */
  perTeam: number;
  /** The limit of an environment (0 for none). */
  perEnvironment: (environmentId: string) => number;
}

export class FairQueue {
  /** Waiting runs by team, each list highest priority first, then oldest; map order = turn order. */
  private readonly teams = new Map<string, Entry[]>();
  private readonly byId = new Map<string, Entry>();
  /** Runs in a slot, counted by team and by environment. */
  private readonly heldByTeam = new Map<string, number>();
  private readonly heldByEnvironment = new Map<string, number>();
  private arrivals = 0;

  constructor(private readonly limits: Limits) {}

  get size(): number {
    return this.byId.size;
  }

  sizeOf(team: string): number {
    return this.teams.get(team)?.length ?? 0;
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  add(w: Waiting): void {
    if (this.byId.has(w.id)) return;
    const entry: Entry = { ...w, order: this.arrivals++ };
    this.byId.set(w.id, entry);
    const list = this.teams.get(w.team) ?? [];
    if (list.length === 0) this.teams.set(w.team, list);
    // Before the first entry of lower priority: equal priorities stay in arrival order.
    const at = list.findIndex((e) => e.priority < entry.priority);
    if (at < 0) list.push(entry);
    else list.splice(at, 0, entry);
  }

  /** Takes a run out of the queue without admitting it (cancelled while queued). */
  remove(id: string): boolean {
    const entry = this.byId.get(id);
    if (!entry) return false;
    this.byId.delete(id);
    const list = this.teams.get(entry.team)!;
    list.splice(list.indexOf(entry), 1);
    if (list.length === 0) this.teams.delete(entry.team);
    return true;
  }

  /** The next run that may take a slot now, taken out of the queue and counted as held. */
  take(): Waiting | undefined {
    for (const [team, list] of this.teams) {
      if (this.limits.perTeam > 0 && (this.heldByTeam.get(team) ?? 0) >= this.limits.perTeam) continue;
      const entry = list.find((e) => this.environmentHasRoom(e.environmentId));
      if (!entry) continue;
      this.remove(entry.id);
      // The team was served: its next run waits for every other team's turn.
      const rest = this.teams.get(team);
      if (rest) {
        this.teams.delete(team);
        this.teams.set(team, rest);
      }
      this.hold(entry);
      return { id: entry.id, team: entry.team, environmentId: entry.environmentId, priority: entry.priority };
    }
    return undefined;
  }

  /** Counts a run in a slot that did not come through take() (restored after a restart). */
  hold(w: Pick<Waiting, "team" | "environmentId">): void {
    this.heldByTeam.set(w.team, (this.heldByTeam.get(w.team) ?? 0) + 1);
    if (w.environmentId) this.heldByEnvironment.set(w.environmentId, (this.heldByEnvironment.get(w.environmentId) ?? 0) + 1);
  }

  /** A run left its slot. */
  release(w: Pick<Waiting, "team" | "environmentId">): void {
    decrement(this.heldByTeam, w.team);
    if (w.environmentId) decrement(this.heldByEnvironment, w.environmentId);
  }

  /**
   * Where the run stands (1 = next), were no limit in the way: teams take one run each per
   * round in turn order, so a run k-th in its team goes in round k, after the teams ahead.
   * 0 when it is not queued.
   */
  position(id: string): number {
    const entry = this.byId.get(id);
    if (!entry) return 0;
    const own = this.teams.get(entry.team)!;
    const k = own.indexOf(entry);
    let ahead = k;
    let before = true;
    for (const [team, list] of this.teams) {
      if (team === entry.team) {
        before = false;
        continue;
      }
      ahead += Math.min(list.length, before ? k + 1 : k);
    }
    return ahead + 1;
  }

  private environmentHasRoom(environmentId: string): boolean {
    if (!environmentId) return true;
    const limit = this.limits.perEnvironment(environmentId);
    return limit <= 0 || (this.heldByEnvironment.get(environmentId) ?? 0) < limit;
  }
}

function decrement(map: Map<string, number>, key: string): void {
  const n = (map.get(key) ?? 0) - 1;
  if (n > 0) map.set(key, n);
  else map.delete(key);
}

/** At most `size` tasks at once; the rest wait in arrival order. */
export class Gate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly size: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.size) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active++;
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}
