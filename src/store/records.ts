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
}

export interface LogLine {
  seq: number;
  time: number;
  stream: string;
  text: string;
}
