import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { RunStatus, type TaskRun } from "../src/gen/paddock/v1/task_run_pb.js";

export const time = (t: Timestamp | undefined): string => (t ? new Date(Number(t.seconds) * 1000 + t.nanos / 1e6).toLocaleString() : "");
export const millis = (t: Timestamp | undefined): number => (t ? Number(t.seconds) * 1000 + t.nanos / 1e6 : 0);

export function seconds(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const m = Math.floor(ms / 60_000);
  return m < 60 ? `${m} min ${Math.round((ms % 60_000) / 1000)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

export const durationMs = (d: Duration | undefined): number => (d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : 0);

export const statusName = (s: RunStatus): string => (RunStatus[s] ?? "UNKNOWN").toLowerCase().replace("_", " ");

/** A run is final once its status is terminal: nothing more will change but cleanup. */
export const isFinal = (run: TaskRun): boolean => run.status === RunStatus.COMPLETED || run.status === RunStatus.FAILED || run.status === RunStatus.CANCELLED;

/** Splits a command line on spaces, keeping "quoted words" together. */
export function words(line: string): string[] {
  return [...line.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3] ?? "");
}
