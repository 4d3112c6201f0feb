import { createHash } from "node:crypto";

/** What the in-sandbox runner serves and the daemon reads. Both sides import this file. */

/** "agent": readable lines projected from an ACP agent's updates (coalesced message chunks, one line per tool call). */
export type RunnerLogStream = "stdout" | "stderr" | "setup" | "agent" | "handoff";

/** An ACP content block or update, as the agent sent it: JSON, kept whole. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface PermissionOptionInfo {
  optionId: string;
  name: string;
  /** allow_once | allow_always | reject_once | reject_always */
  kind: string;
}

export type RunnerEvent =
  | { seq: number; time: number; kind: "log"; stream: RunnerLogStream; text: string }
  /** stage "setup": the setup script failed and the agent never started. */
  | { seq: number; time: number; kind: "exit"; exitCode: number; signal: string | null; stage?: "setup" | "agent"; reason?: string }
  /** An ACP session/update, whole; `replayed` while a session/load replays history. */
  | { seq: number; time: number; kind: "acp"; sessionId: string; updateKind: string; update: Json; replayed?: boolean }
  /** A prompt sent to the agent: the task's at the start, then each SendPrompt. `by` names who sent it. */
  | { seq: number; time: number; kind: "prompt"; promptId: string; content: Json[]; by: string }
  /** The agent asks to run a tool; parked under the "ask" policy until answered or expired. */
  | { seq: number; time: number; kind: "permission"; requestId: string; toolCall: Json; options: PermissionOptionInfo[]; expiresAt: number | null }
  /** How a permission request ended: an option chosen (by policy, a client or the timeout), or cancelled. */
  | { seq: number; time: number; kind: "permission_resolved"; requestId: string; optionId: string | null; by: string }
  /** A turn ended: ACP's stopReason (end_turn, max_tokens, max_turn_requests, refusal, cancelled). */
  | { seq: number; time: number; kind: "turn_end"; promptId: string; stopReason: string };

export type RunnerEventKind = RunnerEvent["kind"];

/** How the runner talks to the agent: a plain command (stdout/stderr lines) or ACP over stdio. */
export type AgentKind = "command" | "acp";
/** background: the run ends with the first turn (end_turn → exit 0). interactive: it waits for prompts. */
export type RunMode = "background" | "interactive";
/** What happens to an ACP permission request. */
export type PermissionPolicy = "auto_allow" | "ask" | "deny";

/** POST /prompt: a follow-up turn, queued while a turn runs. */
export interface PromptRequest {
  promptId: string;
  content: Json[];
  by: string;
}
/** POST /permission: a client's answer to a parked request; optionId null to reject. */
export interface PermissionResponse {
  requestId: string;
  optionId: string | null;
  by: string;
}

export interface RunnerHealth {
  runId: string;
  /** "ready": setup succeeded and the agent waits for POST /continue (StartRequest.holdAfterSetup). */
  agent: "starting" | "running" | "ready" | "exited";
  /** While running: whether the setup script or the agent is. */
  stage?: "setup" | "agent";
  exitCode: number | null;
  lastSeq: number;
  /** How the runner talks to the agent (PADDOCK_AGENT_KIND). */
  agentKind?: AgentKind;
  /**
   * ACP agents, until they exit: "starting" until the session exists, "working" while a
   * turn runs, "idle" between turns (an interactive run waits for POST /prompt).
   */
  turn?: "starting" | "working" | "idle";
  /** ACP agents: permission requests parked for an answer (policy "ask"). */
  pendingPermissions?: number;
  /** ACP agents: prompts queued behind the running turn. */
  queuedPrompts?: number;
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
  /**
   * A run started from a handoff whose agent cannot load its session: the earlier
   * conversation, as paddock stored it, given with the first prompt.
   */
  handoffTranscript?: { runId: string; text: string };
}

/** The refs a handoff bundle carries: the working state, and the conversation's files. */
export const HANDOFF_WORK_REF = "refs/paddock/handoff";
export const HANDOFF_CONVERSATION_REF = "refs/paddock/conversation";
/** Header of POST /handoff's answer: the state's manifest, JSON in base64url; the body is the bundle. */
export const HANDOFF_HEADER = "x-paddock-handoff";

export interface HandoffFileInfo {
  /** Relative to the agent's home. */
  path: string;
  format: "claude" | "codex" | "other";
}

/** What POST /handoff took: the commits in its bundle and what they mean. */
export interface HandoffState {
  /** The agent's branch; "" for a detached HEAD. */
  branch: string;
  head: string;
  index: string;
  worktree: string;
  /** "" without a conversation. */
  conversation: string;
  sessionId: string;
  /** The workspace the session files are keyed to. */
  sourceCwd: string;
  files: HandoffFileInfo[];
  lastSeq: number;
}

/**
 * PADDOCK_HANDOFF: a run that starts from a handed-in state. The daemon fetched the
 * upload's bundle into the source under `${refPrefix}/work` and `${refPrefix}/conversation`.
 */
export interface HandoffStart extends Omit<HandoffState, "branch" | "lastSeq"> {
  refPrefix: string;
}

/** Written by the runner once it listens, read by providers to find it. */
export interface RunnerInfo {
  pid: number;
  port: number;
  agentPid: number | null;
}

/**
 * POST /collect (`?handoff=1` for the handoff state too): the agent stops, and its work and
 * handoff state are taken in one capture and sent in one answer — a CollectManifest in the
 * header, then the work's bundle and the handoff's bundle, back to back, in the body.
 */
export const COLLECT_PATH = "/collect";
export const COLLECT_HEADER = "x-paddock-collect";

export interface CollectManifest {
  /** `bytes`: the length of the work's bundle at the start of the body (0: nothing to bundle). */
  work: { branch: string; head: string; bytes: number };
  /** The handoff state, when asked for and taken; its bundle follows the work's. */
  handoff?: HandoffState & { bytes: number };
  /** Why the handoff state, asked for, could not be taken. */
  handoffError?: string;
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

/** A warm pool's runner, before its claim: GET whether it is up; POST its run (ClaimRequest). */
export const POOL_HEALTH_PATH = "/pool";
export const CLAIM_PATH = "/claim";

/**
 * On POST /claim's 200 answer, sent with its headers as soon as the runner has recorded the
 * claim (from then on the container is the run's, restarts included); the body follows once
 * the run's runner listens: `{"ok":true}`, or `{"error":…}` when it cannot take the run.
 */
export const CLAIM_ACCEPTED_HEADER = "x-paddock-claim-accepted";

/** POST /claim's body: the run's variables (RUN_VARIABLES), as a runner's environment would hold them. */
export interface ClaimRequest {
  env: Record<string, string>;
}

/** What a pool runner is started with (PADDOCK_POOL_CLAIM): the hash of the secret the daemon claims it with. */
export const claimSecretHash = (secret: string): string => createHash("sha256").update(secret).digest("hex");

/**
 * In a snapshot's .git: the commit its HEAD, index and tracked files matched when the
 * snapshot was settled (in a container of its image, before any agent ran there).
 */
export const SETTLED_FILE = "paddock-settled";
