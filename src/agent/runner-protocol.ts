/** What the in-sandbox runner serves and the daemon reads. Both sides import this file. */

export type RunnerLogStream = "stdout" | "stderr" | "setup";

export type RunnerEvent =
  | { seq: number; time: number; kind: "log"; stream: RunnerLogStream; text: string }
  /** stage "setup": the setup script failed and the agent never started. */
  | { seq: number; time: number; kind: "exit"; exitCode: number; signal: string | null; stage?: "setup" | "agent" };

export interface RunnerHealth {
  runId: string;
  agent: "starting" | "running" | "exited";
  exitCode: number | null;
  lastSeq: number;
}

export interface RunnerEventsResponse {
  events: RunnerEvent[];
}

/** What the daemon sends with POST /start: the run's environment, decided at the last moment. */
export interface StartRequest {
  env?: Record<string, string>;
  /** Only the setup script sees these. */
  setupEnv?: Record<string, string>;
  setupScript?: string;
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
