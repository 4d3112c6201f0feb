/** What the in-sandbox runner serves and the daemon reads. Both sides import this file. */

export type RunnerEvent =
  | { seq: number; time: number; kind: "log"; stream: "stdout" | "stderr"; text: string }
  | { seq: number; time: number; kind: "exit"; exitCode: number; signal: string | null };

export interface RunnerHealth {
  runId: string;
  agent: "starting" | "running" | "exited";
  exitCode: number | null;
  lastSeq: number;
}

export interface RunnerEventsResponse {
  events: RunnerEvent[];
}

/** Written by the runner once it listens, read by providers to find it. */
export interface RunnerInfo {
  pid: number;
  port: number;
  agentPid: number | null;
}

export const RUNNER_INFO_FILE = "runner.json";
export const RUNNER_EVENTS_FILE = "events.jsonl";
export const MAX_EVENTS_PER_RESPONSE = 2000;
