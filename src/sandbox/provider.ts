import type { RunnerEnv, RunVariable } from "../agent/runner-env.js";
import type { AgentKind, HandoffStart, HandoffState, PermissionPolicy, RunMode } from "../agent/runner-protocol.js";
import type { RunnerClient } from "./runner-client.js";
import type { NetworkPolicy } from "./egress-policy.js";

/**
 * One interface for every place a run's sandbox can live. Implementations take their
 * options in the constructor, reject on failure with SandboxError, and make every method
 * idempotent: after a daemon restart any of them may be called again for the same name.
 */
export interface SandboxSpec {
  runId: string;
  /** Deterministic: sandboxName(runId, attempt). Find-or-create keys on it. */
  name: string;
  /** Clone URL or absolute local path of the repository. */
  repositoryUrl: string;
  /** Branch to start from; empty for the repository's default. */
  branch: string;
  /** Branch the agent works on, created by provisioning. */
  resultBranch: string;
  agentCommand: string[];
  /** How the runner drives the agent; absent: a command in the background. */
  agent?: { kind: AgentKind; mode: RunMode; permissionPolicy: PermissionPolicy };
  prompt: string;
  /** The runner verifies the daemon's sandbox tokens with this key. */
  publicKeyPem: string;
  /** A sandbox token for this run, for the provider's own health checks. */
  token: string;
  /** Network policy per stage; null for a run without an environment (unrestricted). */
  network: { setup: NetworkPolicy; agent: NetworkPolicy } | null;
  /** Past this much output the runner drops lines, counting them. */
  logBudget: { maxBytes: number; maxLines: number };
  /** The run's environment ("" for none): setup may leave its secrets on disk, so snapshots never cross it. */
  environmentId?: string;
  /** What setup depends on (script, variables, secrets' versions); "" without setup. */
  setupHash?: string;
  /** The sandbox image the run asked for (its own, or its environment's); "" for the provider's. */
  image?: string;
  /** The run's deadline (epoch ms): providers with a sandbox lifetime (modal) set it from this. */
  deadlineAt?: number;
  /** This run's overrides of the provider's resource limits and runtime. */
  limits: { cpus?: number; memoryBytes?: number; pids?: number; runtime?: string };
  /** The run has brokered secrets: all its traffic must go through the egress proxy, whatever its policy. */
  brokered?: boolean;
  /** Sandboxes its environment wants kept ready for runs like it (warm_pool); absent or 0: the provider's own. */
  warmPool?: number;
  /**
   * A run that starts from a handed-in state: the upload's bundle, fetched into the source
   * by the provider (importHandoff) before the runner starts, and what it holds.
   */
  handoff?: { bundle: string } & Omit<HandoffStart, "refPrefix">;
}

export type SandboxState = "running" | "stopped" | "missing";

export interface SandboxStatus {
  state: SandboxState;
  /** Base URL of the runner's API, when it is reachable. */
  endpoint?: string;
  /** provision() only: setup already ran in the snapshot this sandbox started from; skip it. */
  setupDone?: boolean;
  /** provision() only: hold the agent after setup, call afterSetup(), then POST /continue. */
  holdAfterSetup?: boolean;
  /** provision() only: CA certificates (a path in the sandbox) setup and the agent must trust. */
  caFile?: string;
}

export interface CleanupResult {
  /** The last commit on the result branch, when the sandbox still had a workspace. */
  resultCommit?: string;
  /** Lines for the run's log about how the work came out. */
  notes?: string[];
}

/**
 * What the daemon hands destroy() besides the name (providers with `collectsHandoff`):
 * the runner it just talked to, and where the run's handoff state goes when it is to be
 * kept — taken in the same capture as the work.
 */
export interface CleanupKeep {
  /** The runner's endpoint, just reached: no need to look it up and poll it again. */
  endpoint?: string;
  handoff?: HandoffSink;
  /** The runner's last events being read: the sandbox is removed only once they are. */
  drained?: Promise<void>;
}

export interface HandoffSink {
  /** A fresh file of the daemon's for the bundle, and the most bytes it may hold. */
  file: string;
  maxBytes: number;
  /** The bundle is in `file`: checks the runner's manifest and keeps both. */
  keep(state: HandoffState, bytes: number): Promise<void>;
  /** The state could not be taken (the work may still have been). */
  failed(error: Error): void;
  /** A runner that predates the one-call capture: the state taken on its own, as before. */
  takeFrom(runner: RunnerClient): Promise<void>;
}

export interface SandboxProvider {
  readonly name: string;
  /** Whether network policy is enforced (false on local: the agent runs on the host). */
  readonly enforcesNetworkPolicy: boolean;
  /** Whether the agent runs as a user of its own, out of reach of the daemon's data. */
  readonly isolatesAgents: boolean;
  /**
   * Whether brokered secrets can stay out of its sandboxes: every request from them to a
   * brokered destination is forced through the egress proxy, which adds the secret.
   */
  readonly brokersSecrets?: boolean;
  /** Prepares what the provider needs before its first sandbox; returns a problem, or null. */
  init?(): Promise<string | null>;
  close?(): Promise<void>;
  /**
   * Finds the sandbox `spec.name` or creates it, and starts its runner, which holds the
   * agent until the daemon's POST /start. Resolves once the runner answers.
   */
  provision(spec: SandboxSpec, signal: AbortSignal, progress: (line: string) => void): Promise<SandboxStatus>;
  /**
   * Called between the runner's start and its continue when provision() asked for a hold:
   * waits until setup is over and, if it succeeded, snapshots the sandbox. Idempotent (after
   * a restart it may run again for a sandbox already going on); never fails the run.
   */
  afterSetup?(spec: SandboxSpec, signal: AbortSignal, progress: (line: string) => void): Promise<void>;
  inspect(name: string): Promise<SandboxStatus>;
  /**
   * Brings back the runner of a sandbox that stopped (its records are still there), so the
   * daemon can read what it recorded before the stop. It never runs the agent again.
   * Resolves with the runner's endpoint, or null when there is nothing to bring back.
   */
  revive?(name: string, runId: string, signal: AbortSignal): Promise<string | null>;
  /**
   * Stops everything in the sandbox and removes it, keeping the agent's work (and, for a
   * provider that `collectsHandoff`, the handoff state `keep` asks for).
   */
  destroy(name: string, signal: AbortSignal, keep?: CleanupKeep): Promise<CleanupResult>;
  /** destroy() takes the handoff state with the work, in one capture (CleanupKeep). */
  readonly collectsHandoff?: boolean;
  /** Names of sandboxes this daemon instance owns, for reaping. */
  list(): Promise<string[]>;
  /** Removes snapshots past their age or over the size budget; returns how many. */
  collectGarbage?(): Promise<number>;
  /** Environment the setup script and the agent need from the provider (an egress proxy); `brokered` as in SandboxSpec. */
  stageEnv?(runId: string, network: SandboxSpec["network"], brokered?: boolean): { setup: Record<string, string>; agent: Record<string, string> };
}

/** Where a provider keeps track of its snapshots (the sandbox_snapshots table). */
export interface SnapshotStore {
  newestComplete(provider: string, key: string): { id: string; externalId: string; commit: string; createdAt: number } | undefined;
  begin(s: SnapshotStart): { id: string } | null;
  get(id: string): { status: string } | undefined;
  complete(id: string, externalId: string, sizeBytes: number): void;
  fail(id: string, error: string): void;
  touch(id: string): void;
  list(provider: string): { id: string; externalId: string; status: string; sizeBytes: number; createdAt: number; lastUsedAt: number }[];
  remove(id: string): void;
}

/** What a snapshot is made from: its key, and the parts of the key kept for people to read. */
export interface SnapshotStart {
  id: string;
  provider: string;
  key: string;
  repository: string;
  commit: string;
  setupHash: string;
  baseImageId: string;
  paddockVersion: string;
  environmentId: string;
}

/**
 * The part of the runner's environment that comes from the run itself, the same for every
 * provider; each adds where things are (address, workdir, state, source, the agent's user).
 * The runner holds the agent until POST /start, when the daemon hands over the environment.
 * A warm pool's runner gets these with its claim instead (RUN_VARIABLES).
 */
export function runnerEnvOfRun(
  run: Pick<SandboxSpec, "runId" | "branch" | "resultBranch" | "agentCommand" | "agent" | "prompt" | "publicKeyPem" | "handoff"> & { logBudget?: SandboxSpec["logBudget"] },
): Pick<RunnerEnv, RunVariable> {
  return {
    PADDOCK_RUN_ID: run.runId,
    PADDOCK_BRANCH: run.branch,
    PADDOCK_RESULT_BRANCH: run.resultBranch,
    PADDOCK_AGENT_COMMAND: JSON.stringify(run.agentCommand),
    // Every variable is set, to the runner's default where the run has none: a container
    // from a snapshot would otherwise inherit the value of the run the snapshot was taken
    // from (its image keeps that run's environment) — its agent kind, its handoff.
    PADDOCK_AGENT_KIND: run.agent?.kind ?? "command",
    PADDOCK_RUN_MODE: run.agent?.mode ?? "background",
    PADDOCK_PERMISSION_POLICY: run.agent?.permissionPolicy ?? "auto_allow",
    PADDOCK_PROMPT: run.prompt,
    PADDOCK_HOLD: "1",
    PADDOCK_LOG_MAX_BYTES: run.logBudget?.maxBytes ?? 1024 ** 3,
    PADDOCK_LOG_MAX_LINES: run.logBudget?.maxLines ?? 10_000_000,
    PADDOCK_HANDOFF: run.handoff ? JSON.stringify(handoffStartOf(run.runId, run.handoff)) : "",
    JWT_PUBLIC_KEY: run.publicKeyPem,
  };
}

/** Where a handoff's bundle is fetched into the run's source: refs of the run's own. */
export function handoffRefPrefix(runId: string): string {
  return `refs/paddock/handoffs/${runId}`;
}

function handoffStartOf(runId: string, h: NonNullable<SandboxSpec["handoff"]>): HandoffStart {
  const { bundle: _bundle, ...rest } = h;
  return { refPrefix: handoffRefPrefix(runId), ...rest };
}

export function sandboxName(runId: string, attempt = 1): string {
  return `paddock-${runId}-${attempt}`;
}
