import { createActor, type ActorScope, type SnapshotFrom } from "xstate";
import type { TaskRunEvent, TaskRunInput, TaskRunMachine } from "../../machines/task-run.machine.js";

export type RunSnapshot = SnapshotFrom<TaskRunMachine>;

/** The machine's invoked effects, by their `src`: each gets its input and an abort signal. */
export type Effects = Record<string, (input: unknown, signal: AbortSignal) => Promise<unknown>>;

/** The persisted form of a snapshot (what the store keeps), as XState writes it. */
type Persisted = { children?: Record<string, { src?: unknown; snapshot?: { input?: unknown } }> } & Record<string, unknown>;

type Action = { type: string; params?: unknown };
type Scope = ActorScope<RunSnapshot, TaskRunEvent> & { actionExecutor: (action: Action) => void };

/**
 * What XState's transition() and initialTransition() do, with one scope per machine
 * instead of one per call: theirs is a new actor of the machine, initial state and all
 * (and, with no input, a TypeError thrown and caught in our context factory) — most of
 * what a transition cost.
 */
const scopes = new WeakMap<TaskRunMachine, { scope: Scope; actions: Action[] }>();

function scopeOf(machine: TaskRunMachine): { scope: Scope; actions: Action[] } {
  let s = scopes.get(machine);
  if (!s) {
    const self = createActor(machine, { input: { runId: "", deadlineAt: 0 } });
    const actions: Action[] = [];
    const scope = {
      self,
      defer: () => {},
      id: "",
      logger: () => {},
      sessionId: "",
      stopChild: () => {},
      system: self.system,
      emit: () => {},
      actionExecutor: (action: Action) => void actions.push(action),
    } as unknown as Scope;
    s = { scope, actions };
    scopes.set(machine, s);
  }
  return s;
}

function initialStep(machine: TaskRunMachine, input: TaskRunInput): [RunSnapshot, Action[]] {
  const { scope, actions } = scopeOf(machine);
  actions.length = 0;
  const snapshot = machine.getInitialSnapshot(scope as never, input);
  return [snapshot, actions.splice(0)];
}

function step(machine: TaskRunMachine, snapshot: RunSnapshot, event: TaskRunEvent): [RunSnapshot, Action[]] {
  const { scope, actions } = scopeOf(machine);
  actions.length = 0;
  const next = machine.transition(snapshot, event, scope as never);
  return [next, actions.splice(0)];
}

/**
 * One run's machine, stepped by XState's pure transition function with its effects run
 * here: a live XState actor (with a child actor per invoke) cost most of a transition.
 * What XState would do is kept: an invoke's effect starts when its state is entered, is
 * aborted when it is left, and ends with the machine's own done/error event; a delayed
 * transition (`after`) is a timer, cancelled when its state is left. Events sent while a
 * step runs are taken after it, in order.
 */
export class PureActor {
  private snapshot: RunSnapshot;
  /** Running effects by invoke id. */
  private readonly running = new Map<string, AbortController>();
  private readonly delayed = new Map<string, ReturnType<typeof setTimeout>>();
  private readonly inbox: TaskRunEvent[] = [];
  private stepping = false;
  private stopped = false;
  /** Effects to start once the snapshot is made: none starts from inside a step. */
  private pendingStart: { id: string; src: string; input: unknown }[] = [];

  private constructor(
    private readonly machine: TaskRunMachine,
    private readonly effects: Effects,
    private readonly observe: (snapshot: RunSnapshot) => void,
    private readonly onError: (error: unknown) => void,
    initial: RunSnapshot,
  ) {
    this.snapshot = initial;
  }

  /** A new run: its initial state (a queued run has no effect yet). */
  static create(machine: TaskRunMachine, effects: Effects, input: TaskRunInput, observe: (s: RunSnapshot) => void, onError: (e: unknown) => void): PureActor {
    const [snapshot, actions] = initialStep(machine, input);
    const actor = new PureActor(machine, effects, observe, onError, snapshot);
    actor.execute(actions);
    return actor;
  }

  /**
   * A stored run: its snapshot as XState restores it, and the effects of the states it is
   * in started again (they are idempotent). Children of a `src` this machine no longer
   * invokes (the deadline timer of MACHINE_VERSION 1) are dropped: their owner took over.
   */
  static restore(machine: TaskRunMachine, effects: Effects, persisted: unknown, observe: (s: RunSnapshot) => void, onError: (e: unknown) => void): PureActor {
    const stored = { ...(persisted as Persisted) };
    const children: Persisted["children"] = {};
    for (const [id, child] of Object.entries(stored.children ?? {})) if (typeof child.src === "string" && child.src in effects) children[id] = child;
    stored.children = children;
    // An actor that is never started: only its restored snapshot (children made, not run) is used.
    const snapshot = createActor(machine, { snapshot: stored as unknown as RunSnapshot, input: stored.context as TaskRunInput }).getSnapshot();
    const actor = new PureActor(machine, effects, observe, onError, snapshot);
    for (const [id, child] of Object.entries(children)) actor.pendingStart.push({ id, src: child.src as string, input: child.snapshot?.input });
    return actor;
  }

  getSnapshot(): RunSnapshot {
    return this.snapshot;
  }

  getPersistedSnapshot(): unknown {
    return this.machine.getPersistedSnapshot(this.snapshot);
  }

  /** Starts the effects of a restored run (a new one has none until it is admitted), then tells its observer, as XState's start() does. */
  start(): void {
    this.startPending();
    this.observe(this.snapshot);
  }

  send(event: TaskRunEvent): void {
    if (this.stopped) return;
    this.inbox.push(event);
    if (this.stepping) return;
    this.stepping = true;
    try {
      for (let next = this.inbox.shift(); next && !this.stopped; next = this.inbox.shift()) this.step(next);
    } finally {
      this.stepping = false;
    }
  }

  /** Aborts its effects and timers; events sent afterwards are dropped. */
  stop(): void {
    this.stopped = true;
    this.inbox.length = 0;
    for (const c of this.running.values()) c.abort();
    this.running.clear();
    for (const t of this.delayed.values()) clearTimeout(t);
    this.delayed.clear();
  }

  private step(event: TaskRunEvent): void {
    let next: RunSnapshot;
    let actions: Action[];
    try {
      [next, actions] = step(this.machine, this.snapshot, event);
    } catch (error) {
      this.stop();
      this.onError(error);
      return;
    }
    if (next === this.snapshot) return; // not taken here
    this.snapshot = next;
    this.execute(actions);
    this.startPending();
    if (next.status === "done") this.stop();
    this.observe(next);
  }

  private execute(actions: readonly Action[]): void {
    for (const action of actions) {
      switch (action.type) {
        case "xstate.spawnChild": {
          const p = action.params as { id: string; src: unknown; input: unknown };
          if (typeof p.src === "string" && p.src in this.effects) this.pendingStart.push({ id: p.id, src: p.src, input: p.input });
          break;
        }
        case "xstate.stopChild": {
          const id = (action.params as { id?: string } | undefined)?.id;
          if (id === undefined) break;
          this.running.get(id)?.abort();
          this.running.delete(id);
          this.pendingStart = this.pendingStart.filter((s) => s.id !== id);
          break;
        }
        case "xstate.raise": {
          const p = action.params as { event: TaskRunEvent; id?: string; delay?: number };
          if (typeof p.delay !== "number") break; // an immediate raise is taken inside the step
          const id = p.id ?? p.event.type;
          clearTimeout(this.delayed.get(id));
          this.delayed.set(
            id,
            setTimeout(() => {
              this.delayed.delete(id);
              this.send(p.event);
            }, p.delay),
          );
          break;
        }
        case "xstate.cancel": {
          const id = (action.params as { sendId: string }).sendId;
          clearTimeout(this.delayed.get(id));
          this.delayed.delete(id);
          break;
        }
        default:
          break; // assign and the like are applied by the transition itself
      }
    }
  }

  private startPending(): void {
    const starting = this.pendingStart;
    this.pendingStart = [];
    for (const { id, src, input } of starting) {
      if (this.stopped) return;
      const controller = new AbortController();
      this.running.set(id, controller);
      const settle = (event: TaskRunEvent) => {
        if (this.running.get(id) !== controller) return; // stopped, or its state left
        this.running.delete(id);
        this.send(event);
      };
      let promise: Promise<unknown>;
      try {
        promise = this.effects[src]!(input, controller.signal);
      } catch (error) {
        promise = Promise.reject(error);
      }
      // The event names are XState's own for an invoke's end, which the machine's onDone/onError take.
      promise.then(
        (output) => settle({ type: `xstate.done.actor.${id}`, output, actorId: id } as unknown as TaskRunEvent),
        (error: unknown) => settle({ type: `xstate.error.actor.${id}`, error, actorId: id } as unknown as TaskRunEvent),
      );
    }
  }
}
