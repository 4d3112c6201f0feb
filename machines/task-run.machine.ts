import { assign, fromPromise, setup } from "xstate";

/**
 * The life of one TaskRun. Pure: every effect is a named actor that `src/runs/` binds
 * with `.provide()`. Invoked actors are re-run when a persisted snapshot is restored, so
 * each of them must be idempotent (see DESIGN.md, "TaskRun lifecycle").
 */

/**
 * Bump when the persisted snapshot changes. 2: no `deadline` child (the owner keeps the
 * deadline); a version 1 snapshot is restored without it.
 */
export const MACHINE_VERSION = 2;

export type RunOutcome = "completed" | "failed" | "cancelled";

export interface TaskRunContext {
  runId: string;
  /** Absolute deadline, epoch milliseconds. */
  deadlineAt: number;
  /** An interactive run awaiting input this long is completed; 0 (or absent in older snapshots): never. */
  idleMs?: number;
  outcome: RunOutcome | null;
  error: string | null;
  exitCode: number | null;
  /** Set when cleanup itself failed; the run is still final. */
  cleanupError: string | null;
  /** Open a pull request from the run's branch once it completed and is cleaned (absent in older snapshots: no). */
  openPullRequest?: boolean;
  /** Why that pull request could not be opened; the run is still completed. */
  pullRequestError?: string | null;
}

export interface TaskRunInput {
  runId: string;
  deadlineAt: number;
  idleMs?: number;
  openPullRequest?: boolean;
}

export interface ProvisionInput {
  runId: string;
}
export interface SuperviseInput {
  runId: string;
}
/** How the agent ended, as its runner reported it. */
export interface AgentExit {
  exitCode: number;
  /** "setup": the environment's setup script failed, and the agent never started. */
  stage?: "setup" | "agent";
}
export interface CleanupInput {
  runId: string;
}
export interface PublishInput {
  runId: string;
}

export type TaskRunEvent =
  | { type: "ADMIT" }
  | { type: "CANCEL"; reason?: string }
  | { type: "COMPLETE"; status: "completed" | "failed"; message?: string }
  | { type: "DEADLINE" }
  | { type: "SANDBOX_LOST"; reason: string }
  /** An ACP agent's turn ended: an interactive run now waits for a prompt. */
  | { type: "TURN_ENDED" }
  /** A prompt reached the agent: it is working again. */
  | { type: "PROMPTED" };

/** A clock deadlines can run on: the real one in the daemon, a simulated one in tests. */
export interface TimerClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

function unbound(name: string): never {
  throw new Error(`task-run machine: actor "${name}" was not provided`);
}

function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

export const taskRunMachine = setup({
  types: {
    context: {} as TaskRunContext,
    events: {} as TaskRunEvent,
    input: {} as TaskRunInput,
  },
  actors: {
    provision: fromPromise<void, ProvisionInput>(async () => unbound("provision")),
    supervise: fromPromise<AgentExit, SuperviseInput>(async () => unbound("supervise")),
    cleanup: fromPromise<void, CleanupInput>(async () => unbound("cleanup")),
    publish: fromPromise<void, PublishInput>(async () => unbound("publish")),
  },
  guards: {
    exitedCleanly: (_, exit: AgentExit) => exit.exitCode === 0,
    hasIdleTimeout: ({ context }) => (context.idleMs ?? 0) > 0,
    wantsPullRequest: ({ context }) => !!context.openPullRequest && context.outcome === "completed",
  },
  delays: {
    idle: ({ context }) => context.idleMs ?? 0,
  },
}).createMachine({
  id: "taskRun",
  context: ({ input }) => ({
    runId: input.runId,
    deadlineAt: input.deadlineAt,
    idleMs: input.idleMs ?? 0,
    outcome: null,
    error: null,
    exitCode: null,
    cleanupError: null,
    openPullRequest: input.openPullRequest ?? false,
    pullRequestError: null,
  }),
  initial: "active",
  states: {
    active: {
      initial: "queued",
      // The deadline (context.deadlineAt) is kept by the machine's owner, which sends
      // DEADLINE: one timer for every run (src/runs/deadlines.ts). Until version 2 it was an
      // invoked timer here, and stored snapshots of version 1 still carry that child.
      on: {
        CANCEL: {
          target: "#taskRun.terminal.cancelled",
          actions: assign({ error: ({ event }) => event.reason ?? "cancelled" }),
        },
        DEADLINE: {
          target: "#taskRun.terminal.failed",
          actions: assign({ error: "timed out" }),
        },
      },
      states: {
        queued: {
          on: { ADMIT: "provisioning" },
        },
        provisioning: {
          invoke: {
            src: "provision",
            input: ({ context }) => ({ runId: context.runId }),
            onDone: "running",
            onError: {
              target: "#taskRun.terminal.failed",
              actions: assign({
                error: ({ event }) => `provisioning failed: ${errorMessage(event.error)}`,
              }),
            },
          },
        },
        running: {
          // An interactive ACP run alternates between a turn (working) and awaiting_input;
          // supervision spans both, and the run stays until it is completed or cancelled.
          initial: "working",
          states: {
            working: { on: { TURN_ENDED: "awaiting_input" } },
            awaiting_input: {
              on: { PROMPTED: "working" },
              // Nobody came back: the conversation is over, and the run completes.
              after: { idle: { guard: "hasIdleTimeout", target: "#taskRun.terminal.completed" } },
            },
          },
          invoke: {
            src: "supervise",
            input: ({ context }) => ({ runId: context.runId }),
            onDone: [
              {
                guard: { type: "exitedCleanly", params: ({ event }) => event.output },
                target: "#taskRun.terminal.completed",
                actions: assign({ exitCode: ({ event }) => event.output.exitCode }),
              },
              {
                target: "#taskRun.terminal.failed",
                actions: assign({
                  exitCode: ({ event }) => event.output.exitCode,
                  error: ({ event }) =>
                    event.output.stage === "setup"
                      ? `setup script exited with code ${event.output.exitCode}`
                      : `agent exited with code ${event.output.exitCode}`,
                }),
              },
            ],
            onError: {
              target: "#taskRun.terminal.failed",
              actions: assign({
                error: ({ event }) => `sandbox died: ${errorMessage(event.error)}`,
              }),
            },
          },
          on: {
            COMPLETE: [
              { guard: ({ event }) => event.status === "completed", target: "#taskRun.terminal.completed" },
              {
                target: "#taskRun.terminal.failed",
                actions: assign({ error: ({ event }) => event.message || "failed by CompleteRun" }),
              },
            ],
            SANDBOX_LOST: {
              target: "#taskRun.terminal.failed",
              actions: assign({ error: ({ event }) => `sandbox died: ${event.reason}` }),
            },
          },
        },
      },
    },
    terminal: {
      // Never entered without a target; the initial state only satisfies XState.
      initial: "failed",
      // Cleanup runs from every way into terminal: finished, failed, cancelled, timed out.
      invoke: {
        src: "cleanup",
        input: ({ context }) => ({ runId: context.runId }),
        onDone: [{ guard: "wantsPullRequest", target: "publishing" }, { target: "cleaned" }],
        onError: [
          {
            guard: "wantsPullRequest",
            target: "publishing",
            actions: assign({ cleanupError: ({ event }) => errorMessage(event.error) }),
          },
          {
            target: "cleaned",
            actions: assign({ cleanupError: ({ event }) => errorMessage(event.error) }),
          },
        ],
      },
      states: {
        completed: { entry: assign({ outcome: "completed", error: null }) },
        failed: { entry: assign({ outcome: "failed" }) },
        cancelled: { entry: assign({ outcome: "cancelled" }) },
      },
    },
    // After the sandbox is gone: the daemon pushes the run's branch and opens its pull
    // request. A persisted state, so a restart in the middle opens it (once) all the same.
    publishing: {
      invoke: {
        src: "publish",
        input: ({ context }) => ({ runId: context.runId }),
        onDone: "cleaned",
        onError: {
          target: "cleaned",
          actions: assign({ pullRequestError: ({ event }) => errorMessage(event.error) }),
        },
      },
    },
    cleaned: { type: "final" },
  },
});

export type TaskRunMachine = typeof taskRunMachine;

/** The phase a run is in: the state's name under active or terminal ("queued" … "cleaned"). */
export type RunPhase = "queued" | "provisioning" | "running" | RunOutcome | "publishing" | "cleaned";

export function phaseOf(value: unknown): RunPhase {
  if (typeof value === "string") return value as RunPhase;
  if (value && typeof value === "object") {
    const [parent, child] = Object.entries(value)[0] ?? [];
    if (parent === "active" || parent === "terminal") return phaseOf(child);
    if (parent === "running") return "running";
  }
  throw new Error(`task-run machine: unknown state ${JSON.stringify(value)}`);
}

/** Whether a running run waits for a prompt (an interactive ACP run between turns). */
export function awaitingInput(value: unknown): boolean {
  const active = (value as { active?: unknown } | null)?.active;
  return (active as { running?: unknown } | null)?.running === "awaiting_input";
}
