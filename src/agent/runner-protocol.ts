/** What the in-sandbox runner serves and the daemon reads. Both sides import this file. */

export type RunnerLogStream = "stdout" | "stderr" | "setup";

export type RunnerEvent =
  | { seq: number; time: number; kind: "log"; stream: RunnerLogStream; text: string }
  /** stage "setup": the setup script failed and the agent never started. */
  | { seq: number; time: number; kind: "exit"; exitCode: number; signal: string | null; stage?: "setup" | "agent" };

export interface RunnerHealth {
  runId: string;
  /** "ready": setup succeeded and the agent waits for POST /continue (StartRequest.holdAfterSetup). */
  agent: "starting" | "running" | "ready" | "exited";
  /** While running: whether the setup script or the agent is. */
  stage?: "setup" | "agent";
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
  /** Values the runner replaces in output before it is recorded: no secret is ever on disk. */
  redact?: { name: string; value: string }[];
  /**
   * After a successful setup, wait for POST /continue before starting the agent: the
   * daemon snapshots the sandbox meanwhile, so later runs skip setup.
   */
  holdAfterSetup?: boolean;
  /** PEM CA certificates (a path in the sandbox) that setup and the agent must trust. */
  caFile?: string;
}

/** Written by the runner once it listens, read by providers to find it. */
export interface RunnerInfo {
  pid: number;
  port: number;
  agentPid: number | null;
}

/** Headers of POST /export's answer; the body is a git bundle, or empty. */
export const EXPORT_BRANCH_HEADER = "x-paddock-branch";
export const EXPORT_HEAD_HEADER = "x-paddock-head";

export const RUNNER_INFO_FILE = "runner.json";
export const RUNNER_EVENTS_FILE = "events.jsonl";
export const MAX_EVENTS_PER_RESPONSE = 2000;
/** Bytes of events per response: a flood of long lines still answers in bounded pieces. */
export const MAX_EVENT_BYTES_PER_RESPONSE = 4 * 1024 * 1024;
/** Longer output lines are cut here, with a note saying how much was dropped. */
export const MAX_LINE_BYTES = 1024 * 1024;
