import type { RunPhase } from "../../machines/task-run.machine.js";
import type { PhaseName, PhaseSpan } from "../store/records.js";

export type { PhaseName, PhaseSpan };
export const PHASE_NAMES: readonly PhaseName[] = ["queued", "provisioning", "setup", "running", "cleanup", "publishing"];

/**
 * The operator's phase for a machine phase: time in a terminal phase before "cleaned" is
 * the cleanup; null for the end of the line. "setup" is not a machine phase: the effects
 * mark it (see RunManager.markPhase).
 */
export function phaseNameOf(phase: RunPhase): PhaseName | null {
  switch (phase) {
    case "queued":
    case "provisioning":
    case "running":
      return phase;
    case "completed":
    case "failed":
    case "cancelled":
      return "cleanup";
    case "publishing":
      return "publishing";
    case "cleaned":
      return null;
    default:
      throw new Error(`unexpected phase ${String(phase satisfies never)}`);
  }
}

/**
 * Moves a run's timings on to phase `to` at `at` (null: ends the last one). Returns the
 * span it closed, if any. The machine enters "running" when provisioning resolves, but a
 * setup script started then is still under way: "running" does not cut "setup" short —
 * the setup span is ended by the mark that the agent started (or by the run ending).
 */
export function advancePhase(spans: PhaseSpan[], to: PhaseName | null, at: number, fromMachine: boolean): PhaseSpan | null {
  const open = spans.length > 0 && spans[spans.length - 1]!.end === null ? spans[spans.length - 1]! : null;
  if (open?.phase === to) return null;
  if (fromMachine && open?.phase === "setup" && to === "running") return null;
  // A mark that comes after the run moved on (a late event of a finished setup) changes nothing.
  if (!fromMachine && open && PHASE_NAMES.indexOf(open.phase) > PHASE_NAMES.indexOf(to ?? "cleanup")) return null;
  if (open) open.end = Math.max(at, open.start);
  if (to) spans.push({ phase: to, start: at, end: null });
  return open;
}

