/** Stored shapes, in domain terms (epoch milliseconds, parsed JSON). */
export interface TaskRecord {
  id: string;
  team: string;
  /** "" for none. */
  environmentId: string;
  taskNumber: number;
  title: string;
  description: string;
  repository: string;
  repositoryUrl: string;
  origin: string;
  createdAt: number;
}

/** Per-run sandbox limits; unset fields take the daemon's settings. */
export interface RunLimits {
  cpus?: number;
  memoryBytes?: number;
  pids?: number;
  runtime?: string;
}

export type RunStatusName = "queued" | "in_progress" | "completed" | "failed" | "cancelled";

export interface RunRecord {
  id: string;
  team: string;
  environmentId: string;
  networkPolicyEnforced: boolean;
  /** Whether the agent ran as a user of its own, out of reach of the daemon's data. */
  agentIsolated: boolean;
  taskId: string;
  runNumber: number;
  status: RunStatusName;
  phase: string;
  provider: string;
  errorMessage: string;
  exitCode: number | null;
  branch: string;
  resultBranch: string;
  resultCommit: string;
  agentCommand: string[];
  agentKind: AgentKindName;
  /** An interactive ACP run between turns, waiting for SendPrompt. */
  awaitingInput: boolean;
  runMode: RunModeName;
  permissionPolicy: PermissionPolicyName;
  limits: RunLimits;
  /** The sandbox image the run asked for (its own or its environment's); "" for the provider's. */
  image: string;
  idempotencyKey: string | null;
  deadlineAt: number;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  updatedAt: number;
  cleanedAt: number | null;
  machineVersion: number;
  runnerCursor: number;
  /** Higher goes first among its team's queued runs. */
  priority: number;
  /** While queued: where the run stands, 1 = next (fair admission, see runs/admission.ts); else 0. */
  queuePosition: number;
  /** Open a pull request when the run completes. */
  openPullRequest: boolean;
  /** The pull request opened from resultBranch; "" and 0 for none yet. */
  pullRequestUrl: string;
  pullRequestNumber: number;
  /** When each phase began and ended, oldest first. */
  phaseTimings: PhaseSpan[];
  /** Handoffs in and out of the run; {} for none. */
  handoff: RunHandoff;
}

/** A run's handoffs: where it started from, how its agent took the conversation back, where it went. */
export interface RunHandoff {
  /** Started from this upload (UploadHandoff). */
  uploadId?: string;
  /** The run the uploaded state was pulled from, if the team owns it. */
  sourceRunId?: string;
  /** The first prompt of a run from a handoff. */
  prompt?: string;
  resume?: "session_load" | "transcript" | "none";
  handedOffAt?: number;
  handedOffTo?: string;
}

export interface LogLine {
  seq: number;
  time: number;
  stream: string;
  text: string;
}

export type AgentKindName = "command" | "acp";
export type RunModeName = "background" | "interactive";
export type PermissionPolicyName = "auto_allow" | "ask" | "deny";

/** The kinds of a run's events; "log" rows are the lines StreamLogs shows. */
export type RunEventKind = "log" | "agent_update" | "prompt" | "permission_request" | "permission_resolved" | "turn_ended";
export const RUN_EVENT_KINDS: readonly RunEventKind[] = ["log", "agent_update", "prompt", "permission_request", "permission_resolved", "turn_ended"];

/** A stored event: its readable line, and for every kind but "log" the event itself as JSON. */
export interface RunEventRow extends LogLine {
  kind: RunEventKind;
  payload: string | null;
}

/** What is appended: a line, or an event with its readable line and JSON. */
export interface NewRunEvent {
  time: number;
  stream: string;
  text: string;
  kind?: RunEventKind;
  payload?: string | null;
}

/** The phases operators see (TaskRun.phase_timings, the phase histogram). */
export type PhaseName = "queued" | "provisioning" | "setup" | "running" | "cleanup" | "publishing";

/** One phase of a run: epoch milliseconds; `end` null while it is under way. */
export interface PhaseSpan {
  phase: PhaseName;
  start: number;
  end: number | null;
}
