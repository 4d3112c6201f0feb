import type { NewRunEvent } from "../store/records.js";
import type { NewRun, RunsRepository, RunTransition, StoredRun } from "../store/runs-repository.js";
import type { Notifier } from "./notifier.js";

/**
 * Group commit: the new runs, transitions and paddock's own log lines of every run, made
 * in one turn of the event loop, written in one transaction at its end (a commit costs far
 * more than the rows in it). Every reader flushes first — the run manager's reads, StreamLogs and
 * StreamEvents, and the ingest of a runner's events, which must come after the lines
 * before them — so nobody sees a state older than one they caused, and lines keep their
 * order. A crash before the flush loses at most that turn's writes, none of them reported
 * to anyone (StartRun answers once its run is stored: see settled()); a restore re-runs
 * the idempotent effects that made them.
 */
export class GroupCommit {
  /** Runs to insert, first: the lines and transitions after them may be theirs. */
  private creates: { run: NewRun; lines: NewRunEvent[]; stored: (row: StoredRun) => void }[] = [];
  private transitions: { id: string; transition: RunTransition }[] = [];
  /** Lines by run, in the order they were made. */
  private lines = new Map<string, NewRunEvent[]>();
  private scheduled = false;
  /** Callers waiting for the next flush without forcing one. */
  private waiting: { resolve: () => void; reject: (error: unknown) => void }[] = [];

  constructor(
    private readonly runs: RunsRepository,
    private readonly notifier: Notifier,
  ) {}

  /** A new run and its first lines, inserted at the end of the turn; `stored` gets its row (run number, seq). */
  create(run: NewRun, lines: NewRunEvent[], stored: (row: StoredRun) => void): void {
    this.creates.push({ run, lines, stored });
    this.schedule();
  }

  /** The run's row as this transition leaves it, written at the end of the turn. */
  transition(id: string, transition: RunTransition): void {
    this.transitions.push({ id, transition });
    this.schedule();
  }

  /** Lines appended to the run's log at the end of the turn (their seqs are given then). */
  log(id: string, lines: NewRunEvent[]): void {
    const pending = this.lines.get(id);
    if (pending) pending.push(...lines);
    else this.lines.set(id, [...lines]);
    this.schedule();
  }

  /**
   * Writes everything pending, and what `also` writes, in one transaction; then tells the
   * runs' followers. Throws when the store cannot take it (the caller decides what dies).
   */
  flush<T>(also?: () => T): T | undefined {
    this.scheduled = false;
    const waiting = this.waiting;
    this.waiting = [];
    if (this.idle) {
      for (const w of waiting) w.resolve();
      return also?.();
    }
    const { creates, transitions, lines } = this;
    this.creates = [];
    this.transitions = [];
    this.lines = new Map();
    let result: T | undefined;
    try {
      result = this.runs.batch(() => {
        for (const c of creates) c.stored(this.runs.create(c.run, c.lines));
        for (const [id, l] of lines) this.runs.appendLogs(id, l);
        if (transitions.length > 0) this.runs.transitionAll(transitions);
        return also?.();
      });
    } catch (error) {
      // Nothing of it is stored: whoever waits for it must not be told it is.
      for (const w of waiting) w.reject(error);
      throw error;
    }
    for (const id of lines.keys()) this.notifier.notify(`logs:${id}`);
    for (const { id } of transitions) this.notifier.notify(`run:${id}`);
    for (const w of waiting) w.resolve();
    return result;
  }

  /**
   * Resolves once what is pending now is stored, by the end-of-turn flush rather than one
   * of its own: in-process waiters (waitForCleaned) do not break the group into pieces.
   */
  settled(): Promise<void> {
    if (this.idle) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  private get idle(): boolean {
    return this.creates.length === 0 && this.transitions.length === 0 && this.lines.size === 0;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // A store that cannot take the write throws here and takes the daemon down: better
    // than running on with state it cannot keep. The restart restores from what was stored.
    setImmediate(() => this.flush());
  }
}
