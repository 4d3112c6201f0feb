import { createHash, randomBytes } from "node:crypto";
import type { Logger } from "pino";
import {
  awaitingInput,
  MACHINE_VERSION,
  phaseOf,
  taskRunMachine,
  type RunPhase,
  type TaskRunEvent,
} from "../../machines/task-run.machine.js";
import type { SandboxKeys } from "../auth/sandbox-token.js";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, ResourceExhaustedError } from "../errors.js";
import type { SandboxProvider } from "../sandbox/provider.js";
import { sandboxName } from "../sandbox/provider.js";
import { brokerRefusal } from "./brokered-secrets.js";
import { createRunnerClient } from "../sandbox/runner-client.js";
import type { LogLine, PermissionPolicyName, RunEventKind, RunEventRow, RunLimits, RunModeName, RunStatusName } from "../store/records.js";
import type { NewRun, RunFilter, RunsRepository, RunTransition, StoredRun } from "../store/runs-repository.js";
import type { TasksRepository } from "../store/tasks-repository.js";
import type { BrokeredUseRow, EgressAuditRepository, EgressAuditRow } from "../store/egress-audit-repository.js";
import type { Json, RunnerEvent } from "../agent/runner-protocol.js";
import { FairQueue, Gate, type Waiting } from "./admission.js";
import { resolveAgent, type AgentRequest } from "./agent-spec.js";
import { usableEnvironment, type Environments } from "./environments.js";
import { GroupCommit } from "./group-commit.js";
import { Deadlines } from "./deadlines.js";
import { PureActor, type Effects, type RunSnapshot } from "./pure-actor.js";
import { Notifier } from "./notifier.js";
import { RunEffects } from "./run-effects.js";
import { RunEvents } from "./run-events.js";
import { reapOrphans } from "./reaper.js";
import { PullRequests, type GitHubSettings, type PullRequestOptions } from "./pull-requests.js";
import type { PullRequestRef } from "../github/pull-requests.js";
import { advancePhase, phaseNameOf, type PhaseName } from "./phase-timings.js";
import type { HandoffManifestData, Handoffs, StoredHandoff } from "./handoffs.js";
import type { RunHandoff } from "../store/records.js";

export interface RunSettings {
  /** Used when a run gives no agent_command; null means every run must give one. */
  defaultAgentCommand: string[] | null;
  defaultTimeoutMs: number;
  defaultProvider: string;
  maxConcurrentRuns: number;
  /** Fair admission (see admission.ts); absent in in-process callers means no limit of its own. */
  maxConcurrentRunsPerTeam?: number;
  maxQueuedRuns?: number;
  maxQueuedRunsPerTeam?: number;
  /** Restored runs talking to their provider at once after a restart. */
  reconcileConcurrency?: number;
  /** How long the runner's events long-poll waits before answering empty. */
  pollWaitMs: number;
  /** How often orphaned sandboxes are looked for (and at every start). */
  reapIntervalMs: number;
  /** A run's log budget, enforced by its runner. */
  logBudget: { maxBytes: number; maxLines: number };
  /** Sandbox images runs and environments may ask for (--sandbox-images). */
  sandboxImages: readonly string[];
  /** Which runs keep their handoff state at cleanup; absent: all. */
  handoffKeep?: "all" | "acp" | "none";
}

export interface RunManagerDeps {
  tasks: TasksRepository;
  /** Only their settings and secrets: runs never change environments. */
  environments: Pick<Environments, "get" | "secretValues">;
  runs: RunsRepository;
  providers: ReadonlyMap<string, SandboxProvider>;
  keys: SandboxKeys;
  logger: Logger;
  settings: RunSettings;
  /** Told what runs do, for metrics; never changes what they do. */
  observer?: RunObserver;
  /** Where the egress proxy counts each run's destinations; absent: none recorded. */
  egress?: EgressAuditRepository;
  /** The daemon's data dir (mirrors of remote repositories), for pushing runs' branches. */
  root?: string;
  /** Where pull requests go; absent: github.com with environments' tokens only. */
  github?: GitHubSettings;
  /** Where handoff states are kept; absent: runs cannot be handed off. */
  handoffs?: Handoffs;
}

/** Hooks for metrics. Called synchronously: implementations must be cheap and must not throw. */
export interface RunObserver {
  /** A run's phase ended after `ms` (a phase a restart interrupted counts whole: its start is stored). */
  phaseEnded?(runId: string, provider: string, phase: PhaseName, ms: number): void;
  eventsIngested?(runId: string, events: readonly RunnerEvent[]): void;
  reaped?(count: number): void;
  /** A provider's operation failed for good (after its retries; not when the run was cancelled). */
  sandboxError?(provider: string, operation: "provision" | "supervise" | "cleanup"): void;
  /** A provider that keeps snapshots started a sandbox from one (hit) or from its base image (miss). */
  snapshotLookup?(provider: string, hit: boolean): void;
}

export interface StartRunParams {
  /** The caller's team: a task of another team is not found. */
  team: string;
  taskId: string;
  branch: string;
  agentCommand: string[];
  timeoutMs: number | null;
  provider: string;
  idempotencyKey: string;
  limits: RunLimits;
  /** Overrides the task's environment; "" for the task's. */
  environmentId: string;
  /** Sandbox image; "" for the environment's or the provider's. */
  image?: string;
  /** The agent the request names (agent_command aside); null or kind "" when none. */
  agent?: AgentRequest | null;
  /** ACP runs; "" for the environment's or paddock's default. */
  mode?: "" | RunModeName;
  permissionPolicy?: "" | PermissionPolicyName;
  /** Higher is admitted first among the team's queued runs. */
  priority?: number;
  /** Open a pull request from the run's branch when it completes. */
  openPullRequest?: boolean;
  /** Start from an uploaded working state (UploadHandoff). */
  handoff?: { uploadId: string; prompt: string } | null;
}

interface LiveRun {
  run: StoredRun;
  /** The snapshot JSON last written; an identical one is not written again. */
  persisted: string;
  /** The snapshot `persisted` was made from: the same object again has nothing new to write. */
  snapshot: unknown;
  cleaned: Promise<void>;
  markCleaned: () => void;
  /** The phase its machine was last seen in. */
  lastPhase: RunPhase;
}


/** Phases the deadline applies in (the machine's `active` state). */
const ACTIVE_PHASES: ReadonlySet<RunPhase> = new Set(["queued", "provisioning", "running"]);
const SLOT_PHASES: ReadonlySet<RunPhase> = new Set(["provisioning", "running", "completed", "failed", "cancelled"]);

export function statusOf(phase: RunPhase, outcome: string | null): RunStatusName {
  switch (phase) {
    case "queued":
      return "queued";
    case "provisioning":
    case "running":
      return "in_progress";
    case "completed":
    case "failed":
    case "cancelled":
      return phase;
    case "publishing":
    case "cleaned":
      return (outcome as RunStatusName | null) ?? "failed";
    default:
      return assertNever(phase);
  }
}

function assertNever(x: never): never {
  throw new Error(`unexpected ${String(x)}`);
}

/** Random bytes for ids, drawn 4 KiB at a time: a call to the CSPRNG per id cost more than the rest of newId. */
let entropy = Buffer.alloc(0);
let entropyAt = 0;

export function newId(prefix: string): string {
  if (entropyAt + 10 > entropy.length) {
    entropy = randomBytes(4096);
    entropyAt = 0;
  }
  // Time first so ids sort roughly by creation; 10 random bytes keep them unguessable.
  const random = entropy.toString("hex", entropyAt, entropyAt + 10);
  entropyAt += 10;
  return `${prefix}_${Date.now().toString(36)}${random}`;
}

/**
 * Owns every live run: one XState actor each, every transition written with its snapshot
 * in one statement, admission by a concurrency limit, and restore-and-reconcile on start.
 */
export class RunManager {
  private readonly actors = new Map<string, PureActor>();
  private readonly queue: FairQueue;
  /** Runs in a slot (provisioning, running, finishing), with what their limits count. */
  private readonly holding = new Map<string, Pick<Waiting, "team" | "environmentId">>();
  private readonly notifier = new Notifier();
  private readonly events: RunEvents;
  private readonly effects: RunEffects;
  private readonly pullRequests: PullRequests;
  private stopping = false;
  private reaping = false;
  private reaper: NodeJS.Timeout | undefined;
  /** The machine's effects, by the name it invokes them with. */
  private readonly machineEffects: Effects;
  /** Every active run's deadline, on one timer. */
  private readonly deadlines = new Deadlines({ now: Date.now, setTimeout, clearTimeout: (id) => clearTimeout(id as NodeJS.Timeout) }, (id) =>
    this.actors.get(id)?.send({ type: "DEADLINE" }),
  );
  /** Transitions and paddock's own log lines, written at the end of this event-loop turn. */
  private readonly commit: GroupCommit;
  /** Per live run: the row as last written, so effects and transitions need no read first. */
  private readonly live = new Map<string, LiveRun>();

  constructor(private readonly deps: RunManagerDeps) {
    this.queue = new FairQueue({
      perTeam: deps.settings.maxConcurrentRunsPerTeam ?? 0,
      perEnvironment: (id) => deps.environments.get(id)?.maxConcurrentRuns ?? 0,
    });
    const reconcile = new Gate(deps.settings.reconcileConcurrency ?? 8);
    this.commit = new GroupCommit(deps.runs, this.notifier);
    this.events = new RunEvents(deps.runs, this.notifier, (id) => this.get(id).phase, (id, events) => {
      deps.observer?.eventsIngested?.(id, events);
      this.setupEndedBy(id, events);
    }, this.commit);
    this.effects = new RunEffects({
      ...deps,
      events: this.events,
      current: (id) => this.current(id),
      send: (id, event) => this.actors.get(id)?.send(event),
      reconcile,
      markPhase: (id, phase, at) => this.markPhase(id, phase, at),
      setHandoff: (id, change) => this.setHandoff(id, change),
    });
    this.pullRequests = new PullRequests({
      root: deps.root ?? "",
      github: deps.github ?? { apiUrl: "https://api.github.com", webUrl: "https://github.com", app: null },
      tasks: deps.tasks,
      environments: deps.environments,
      lastOutput: (id, limit) => deps.runs.lastOutput(id, limit),
      record: (id, url, number) => this.recordPullRequest(id, url, number),
      system: (id, text) => this.system(id, text),
      logger: deps.logger,
    });
    const runId = (input: unknown) => (input as { runId: string }).runId;
    this.machineEffects = {
      provision: (input, signal) => this.effects.provision(runId(input), signal),
      supervise: (input, signal) => this.effects.supervise(runId(input), signal),
      cleanup: (input, signal) => this.effects.cleanup(runId(input), signal),
      publish: (input, signal) => this.publish(runId(input), signal),
    };
  }

  // ── Client operations ────────────────────────────────────────────────────────────

  start(p: StartRunParams): StoredRun {
    const { tasks, runs, settings, providers } = this.deps;
    const from = p.handoff ? this.handoffStart(p) : null;
    if (from) p = { ...p, ...from.params };
    const task = tasks.get(p.taskId);
    if (!task || task.team !== p.team) throw new NotFoundError("task", p.taskId);
    if (p.idempotencyKey) {
      this.flush(); // runs started earlier in this turn are stored, and found
      const existing = runs.byIdempotencyKey(task.id, p.idempotencyKey);
      if (existing) return existing;
    }
    const environmentId = p.environmentId || task.environmentId;
    const env = environmentId ? usableEnvironment(this.deps.environments, environmentId, p.team, task.repository, "environment_id") : undefined;
    const providerName = p.provider || env?.defaultProvider || settings.defaultProvider;
    if (!providers.has(providerName)) {
      throw new InvalidArgumentError(
        "provider",
        `unknown provider ${JSON.stringify(providerName)}; this daemon has: ${[...providers.keys()].join(", ")}`,
      );
    }
    if (Object.keys(p.limits).length > 0 && providerName === "local") {
      throw new InvalidArgumentError("limits", "the local provider runs the agent as a plain process and cannot apply sandbox limits; use provider docker");
    }
    const image = this.imageFor(p, env?.image ?? "", providerName);
    this.checkQueueRoom(task.team);
    const brokered = env?.secrets.filter((s) => s.broker).map((s) => s.name) ?? [];
    const refusal = brokerRefusal(providers.get(providerName)!, brokered);
    if (refusal) throw new InvalidArgumentError("provider", refusal);
    const { agentCommand, agent } = resolveAgent({
      agent: p.agent ?? null,
      agentCommand: p.agentCommand,
      mode: p.mode ?? "",
      permissionPolicy: p.permissionPolicy ?? "",
      env,
      defaultCommand: settings.defaultAgentCommand,
    });
    const id = newId("run");
    const now = Date.now();
    const deadlineAt = now + (p.timeoutMs ?? env?.timeoutMs ?? settings.defaultTimeoutMs);
    const idleMs = agent?.mode === "interactive" ? (env?.idleTimeoutMs ?? 0) : 0;
    const openPullRequest = !!p.openPullRequest;
    const actor = this.newActor(id, (observe, onError) => PureActor.create(taskRunMachine, this.machineEffects, { runId: id, deadlineAt, idleMs, openPullRequest }, observe, onError));
    const snapshot = actor.getPersistedSnapshot();
    const snapshotJson = JSON.stringify(snapshot);
    const record: NewRun = {
      id,
      team: task.team,
      environmentId,
      networkPolicyEnforced: !!env && providers.get(providerName)!.enforcesNetworkPolicy,
      agentIsolated: providers.get(providerName)!.isolatesAgents,
      taskId: task.id,
      status: "queued",
      phase: "queued",
      provider: providerName,
      branch: p.branch,
      resultBranch: `paddock/${id}`,
      agentCommand,
      agentKind: agent?.kind ?? "command",
      runMode: agent?.mode ?? "background",
      permissionPolicy: agent?.permissionPolicy ?? "auto_allow",
      limits: p.limits,
      image,
      priority: p.priority ?? 0,
      idempotencyKey: p.idempotencyKey || null,
      openPullRequest,
      deadlineAt,
      createdAt: now,
      updatedAt: now,
      snapshot,
      snapshotJson,
      machineVersion: MACHINE_VERSION,
      phaseTimings: [{ phase: "queued", start: now, end: null }],
      handoff: from ? { ...from.handoff, ...(agent?.kind === "acp" ? {} : { resume: "none" as const }) } : {},
    };
    const firstLines = [
      { time: now, stream: "system", text: `run queued (provider ${providerName}, deadline ${new Date(deadlineAt).toISOString()})` },
      ...(from ? [{ time: now, stream: "system", text: from.note }] : []),
    ];
    let run: StoredRun;
    if (p.idempotencyKey) {
      // Stored now: a key is unique per task, and a second start with it must find this one.
      try {
        run = runs.create(record, firstLines);
      } catch (error) {
        // Two StartRun calls raced with one key: the loser returns the winner's run.
        const existing = runs.byIdempotencyKey(p.taskId, p.idempotencyKey);
        if (existing) return existing;
        throw error;
      }
    } else {
      // Stored with this turn's group commit; its number and seq are known from then on.
      run = runs.draft(record);
      this.commit.create(record, firstLines, (stored) => {
        const live = this.live.get(id)?.run;
        if (live) Object.assign(live, { runNumber: stored.runNumber, seq: stored.seq });
      });
    }
    this.deps.logger.info({ runId: id, taskId: task.id, provider: providerName }, "run queued");
    this.track(id, actor, "queued", run, snapshotJson, true);
    this.pump();
    return { ...this.current(id) };
  }

  /**
   * StartRun: start(), answered once the run is stored (with the turn's group commit), so a
   * client never holds the id of a run a crash could lose.
   */
  async startStored(p: StartRunParams): Promise<StoredRun> {
    const run = this.start(p);
    await this.commit.settled();
    return { ...this.current(run.id) };
  }

  /** Back-pressure: past the queue's depth, StartRun fails at once instead of queueing without end. */
  private checkQueueRoom(team: string): void {
    const { maxQueuedRuns, maxQueuedRunsPerTeam } = this.deps.settings;
    if (maxQueuedRunsPerTeam !== undefined && this.queue.sizeOf(team) >= maxQueuedRunsPerTeam) {
      throw new ResourceExhaustedError(
        `team ${JSON.stringify(team)} has ${this.queue.sizeOf(team)} queued runs, the most this daemon takes per team (--max-queued-runs-per-team); try again when some have started`,
      );
    }
    if (maxQueuedRuns !== undefined && this.queue.size >= maxQueuedRuns) {
      throw new ResourceExhaustedError(`${this.queue.size} runs are queued, the most this daemon takes (--max-queued-runs); try again when some have started`);
    }
  }

  /**
   * What a start from an upload changes: the task (the upload's when none is named), the
   * agent (the source run's when none is named), the branch (the state carries its own).
   */
  private handoffStart(p: StartRunParams): { params: Partial<StartRunParams>; handoff: RunHandoff; note: string } {
    if (!this.deps.handoffs) throw new FailedPreconditionError("this daemon keeps no handoffs");
    const { manifest: m } = this.deps.handoffs.upload(p.handoff!.uploadId, p.team);
    if (p.taskId && m.taskId && p.taskId !== m.taskId) throw new InvalidArgumentError("handoff.upload_id", `was uploaded for task ${m.taskId}, not ${p.taskId}`);
    const taskId = p.taskId || m.taskId;
    if (!taskId) throw new InvalidArgumentError("task_id", "is required (the upload names no task)");
    let source: StoredRun | undefined;
    try {
      source = m.runId ? this.owned(m.runId, p.team) : undefined;
    } catch {
      source = undefined; // another team's, or gone: no transcript from it
    }
    const named = p.agentCommand.length > 0 || !!(p.agent && (p.agent.kind || p.agent.preset || p.agent.command.length > 0));
    const params: Partial<StartRunParams> = { taskId, branch: "" };
    if (!named && source) {
      params.agent = { kind: source.agentKind, preset: "", command: source.agentCommand };
      params.agentCommand = source.agentKind === "command" ? source.agentCommand : [];
      params.mode = p.mode || source.runMode;
      params.permissionPolicy = p.permissionPolicy || source.permissionPolicy;
    }
    const what = m.sessionId ? `, conversation ${m.sessionId}` : "";
    return {
      params,
      handoff: { uploadId: p.handoff!.uploadId, sourceRunId: source?.id, prompt: p.handoff!.prompt },
      note: `handed in: ${m.branch ? `branch ${m.branch} ` : ""}at ${m.head.slice(0, 12)} with its working tree${what}${source ? ` (from run ${source.id})` : ""}`,
    };
  }

  /** Changes the run's handoff record, in memory and stored. */
  private setHandoff(id: string, change: Partial<RunHandoff>): void {
    const run = this.live.get(id)?.run ?? this.get(id);
    const next = { ...run.handoff, ...change };
    this.deps.runs.setHandoff(id, next);
    const live = this.live.get(id);
    if (live) live.run.handoff = next;
    this.notifier.notify(`run:${id}`);
  }

  /**
   * Hands the run off: a running run is ended (completed) and its state taken once its
   * agent stopped; a finished run gives the state kept at its cleanup. Resolves when the
   * state is there; the run records when and where it went.
   */
  async exportRun(id: string, to: string, by: string, signal: AbortSignal): Promise<StoredHandoff> {
    const handoffs = this.deps.handoffs;
    if (!handoffs) throw new FailedPreconditionError("this daemon keeps no handoffs");
    const run = this.get(id);
    if (run.phase === "queued" || run.phase === "provisioning") throw new FailedPreconditionError(`run ${id} is ${run.phase}; a run can be handed off once it runs`);
    const first = !run.handoff.handedOffAt;
    this.setHandoff(id, { handedOffAt: Date.now(), handedOffTo: to });
    if (!handoffs.stored(id) && run.phase === "running") {
      this.system(id, `handed off to ${to} by ${by}: the run ends here and its working state is taken`);
      const actor = this.actors.get(id);
      const event: TaskRunEvent = { type: "COMPLETE", status: "completed", message: "" };
      if (actor?.getSnapshot().can(event)) actor.send(event);
    } else if (first) {
      this.system(id, `handed off to ${to} by ${by}`);
    }
    if (!handoffs.stored(id)) await this.waitForCleaned(id, signal);
    const stored = handoffs.stored(id);
    if (!stored) {
      const why = handoffs.failure(id);
      throw new FailedPreconditionError(`run ${id} has no handoff state: ${why ? `it could not be taken: ${why}` : "none was kept when the run was cleaned"}`);
    }
    return stored;
  }

  /** Keeps an uploaded working state for StartRun.handoff. */
  uploadHandoff(team: string, manifest: HandoffManifestData, chunks: AsyncIterable<Uint8Array>): Promise<{ uploadId: string; size: number }> {
    if (!this.deps.handoffs) throw new FailedPreconditionError("this daemon keeps no handoffs");
    if (manifest.taskId) {
      const task = this.deps.tasks.get(manifest.taskId);
      if (!task || task.team !== team) throw new NotFoundError("task", manifest.taskId);
    }
    return this.deps.handoffs.saveUpload(team, manifest, chunks);
  }

  /** The run's image (its own, else its environment's), checked against the operator's allowlist. */
  private imageFor(p: StartRunParams, envImage: string, providerName: string): string {
    if (p.image && providerName === "local") throw new InvalidArgumentError("image", "the local provider runs the agent on the host, with no image; use provider docker");
    const image = p.image || (providerName === "local" ? "" : envImage);
    if (image && !this.deps.settings.sandboxImages.includes(image)) {
      throw new InvalidArgumentError(
        p.image ? "image" : "environment_id",
        `image ${JSON.stringify(image)}${p.image ? "" : " (the environment's)"} is not allowed on this daemon (--sandbox-images: ${this.deps.settings.sandboxImages.join(", ")})`,
      );
    }
    return image;
  }

  /** The team's run `id`: another team's run does not exist for it. */
  owned(id: string, team: string): StoredRun {
    const run = this.get(id);
    if (run.team !== team) throw new NotFoundError("run", id);
    return run;
  }

  /** The destinations the run's sandbox asked the egress proxy for. */
  egress(id: string): EgressAuditRow[] {
    return this.deps.egress?.list(id) ?? [];
  }

  /** Requests the egress proxy added each brokered secret to, by destination. */
  brokeredUses(id: string): BrokeredUseRow[] {
    return this.deps.egress?.brokered(id) ?? [];
  }

  get(id: string): StoredRun {
    this.flush();
    const run = this.deps.runs.get(id);
    if (!run) throw new NotFoundError("run", id);
    return this.withPosition(run);
  }

  list(filter: RunFilter, before: number, limit: number): StoredRun[] {
    this.flush();
    return this.deps.runs.list(filter, before, limit).map((r) => this.withPosition(r));
  }

  private withPosition(run: StoredRun): StoredRun {
    if (run.phase === "queued") run.queuePosition = this.queue.position(run.id);
    return run;
  }

  cancel(id: string): StoredRun {
    return this.sendOrReject(id, { type: "CANCEL", reason: "cancelled by client" }, "cancelled");
  }

  complete(id: string, status: "completed" | "failed", message: string): StoredRun {
    return this.sendOrReject(id, { type: "COMPLETE", status, message }, "completed");
  }

  private sendOrReject(id: string, event: TaskRunEvent, verb: string): StoredRun {
    const run = this.get(id);
    const actor = this.actors.get(id);
    if (!actor || !actor.getSnapshot().can(event)) {
      const only = event.type === "COMPLETE" ? "only a running run" : "only a queued, provisioning or running run";
      throw new FailedPreconditionError(`run ${id} is ${run.phase}; ${only} can be ${verb}`);
    }
    actor.send(event);
    return this.get(id);
  }

  /** Stored lines after afterSeq in batches, then (follow) live ones until the run is cleaned. */
  logs(id: string, afterSeq: number, follow: boolean, signal: AbortSignal): AsyncGenerator<LogLine[]> {
    this.get(id);
    return this.events.logs(id, afterSeq, follow, signal);
  }

  /** Every event (or those of `kinds`) after afterSeq, then (follow) live ones until the run is cleaned. */
  runEvents(id: string, afterSeq: number, follow: boolean, kinds: ReadonlySet<RunEventKind>, signal: AbortSignal): AsyncGenerator<RunEventRow[]> {
    this.get(id);
    return this.events.events(id, afterSeq, follow, kinds, signal);
  }

  // ── Pull requests ──────────────────────────────────────────────────────────────────

  /** Pushes the run's branch and opens (or finds) its pull request; the run records it. */
  async createPullRequest(id: string, o: PullRequestOptions, signal: AbortSignal): Promise<{ pullRequest: PullRequestRef; run: StoredRun }> {
    const pullRequest = await this.pullRequests.open(this.get(id), o, signal);
    return { pullRequest, run: this.get(id) };
  }

  /** The machine's publish effect: StartRun.open_pull_request, once the run completed and is cleaned. */
  private async publish(id: string, signal: AbortSignal): Promise<void> {
    try {
      await this.pullRequests.open(this.get(id), { title: "", body: "", draft: false, base: "" }, signal);
    } catch (error) {
      if (signal.aborted && this.stopping) throw error; // the daemon stops: the restart publishes
      this.system(id, `pull request not opened: ${(error as Error).message}`);
      throw error;
    }
  }

  private recordPullRequest(id: string, url: string, number: number): void {
    this.deps.runs.setPullRequest(id, url, number);
    const live = this.live.get(id)?.run;
    if (live) Object.assign(live, { pullRequestUrl: url, pullRequestNumber: number });
    this.notifier.notify(`run:${id}`);
  }

  // ── Conversations (ACP runs) ───────────────────────────────────────────────────────

  /**
   * Queues a follow-up turn of an interactive ACP run. A repeated idempotency key gives
   * the same prompt id, which the runner takes once.
   */
  async sendPrompt(id: string, content: Json[], by: string, idempotencyKey: string, signal: AbortSignal): Promise<string> {
    const runner = await this.conversation(id, "sent a prompt", true);
    const promptId = idempotencyKey ? `prm_${createHash("sha256").update(`${id}\0${idempotencyKey}`).digest("hex").slice(0, 20)}` : newId("prm");
    await runner.prompt({ promptId, content, by }, signal);
    return promptId;
  }

  async respondPermission(id: string, requestId: string, optionId: string | null, by: string, signal: AbortSignal): Promise<void> {
    const runner = await this.conversation(id, "answered", false);
    try {
      await runner.permission({ requestId, optionId, by }, signal);
    } catch (error) {
      // The runner says 404 for a request it does not have, 409 for one already resolved.
      const m = /HTTP (404|409)/.exec((error as Error).message);
      if (m?.[1] === "404") throw new NotFoundError("permission request", requestId);
      if (m?.[1] === "409") throw new FailedPreconditionError(`permission request ${requestId} is already resolved`);
      throw error;
    }
  }

  async cancelTurn(id: string, signal: AbortSignal): Promise<void> {
    await (await this.conversation(id, "have its turn cancelled", false)).cancelTurn(signal);
  }

  /** The runner of a running ACP run, for a conversation call; the error says why not. */
  private async conversation(id: string, verb: string, interactiveOnly: boolean) {
    const run = this.get(id);
    if (run.agentKind !== "acp") throw new FailedPreconditionError(`run ${id} runs a command, not an ACP agent; only ACP runs can be ${verb}`);
    if (interactiveOnly && run.runMode !== "interactive") throw new FailedPreconditionError(`run ${id} is a background run; only interactive runs take follow-up prompts`);
    if (run.phase !== "running") throw new FailedPreconditionError(`run ${id} is ${run.phase}; only a running run can be ${verb}`);
    const status = await this.effects.providerOf(run.provider).inspect(sandboxName(id));
    if (!status.endpoint) throw new FailedPreconditionError(`the sandbox of run ${id} is ${status.state}`);
    return createRunnerClient(status.endpoint, await this.effects.tokenFor(run));
  }

  /** The run now, then at every change, until it is cleaned. */
  async *watch(id: string, signal: AbortSignal): AsyncGenerator<StoredRun> {
    this.get(id);
    const sub = this.notifier.subscribe([`run:${id}`]);
    let last = "";
    try {
      while (!signal.aborted) {
        sub.arm();
        const run = this.get(id);
        const key = `${run.updatedAt}|${run.phase}|${run.resultCommit}|${run.errorMessage}|${run.pullRequestUrl}`;
        if (key !== last) {
          last = key;
          yield run;
        }
        if (run.phase === "cleaned") return;
        await sub.wait(signal);
      }
    } finally {
      sub.close();
    }
  }

  // ── Lifecycle ────────────────────────────────────────────────────────────────────

  /** Restores every run that is not cleaned and lets its effects reconcile with the provider. */
  async restore(): Promise<void> {
    const live = this.deps.runs.live();
    for (const run of live) {
      // Version 1 differs only in its deadline child, which is dropped (the deadline is the row's).
      if (run.machineVersion !== MACHINE_VERSION && run.machineVersion !== 1) {
        this.deps.logger.warn({ runId: run.id, stored: run.machineVersion, current: MACHINE_VERSION }, "restoring a run written by another machine version");
      }
      // The state, context and invoked effects are restored; the effects run again.
      const actor = this.newActor(run.id, (observe, onError) => PureActor.restore(taskRunMachine, this.machineEffects, run.snapshot, observe, onError));
      const phase = run.phase as RunPhase;
      if (SLOT_PHASES.has(phase)) this.hold(run);
      // Its effects run again: their first call to the provider waits for a reconcile slot.
      if (phase !== "queued") this.effects.restored(run.id);
      this.deps.logger.info({ runId: run.id, phase }, "restoring run");
      this.system(run.id, `daemon restarted; resuming the run in phase ${phase}`);
      this.track(run.id, actor, phase, run, JSON.stringify(run.snapshot));
    }
    this.pump();
    await this.reap();
    this.reaper = setInterval(() => void this.reap(), this.deps.settings.reapIntervalMs);
    this.reaper.unref();
  }

  /** Stops the actors without touching stored state: the next start restores them. */
  async stop(): Promise<void> {
    this.flush();
    this.stopping = true;
    clearInterval(this.reaper);
    for (const actor of this.actors.values()) actor.stop();
    this.actors.clear();
    this.deadlines.stop();
  }

  /** Runs waiting for a slot. */
  get queueDepth(): number {
    return this.queue.size;
  }

  /** Resolves when the run is cleaned (in-process callers: benchmarks, tests). */
  async waitForCleaned(id: string, signal: AbortSignal): Promise<StoredRun> {
    const live = this.live.get(id);
    if (live) {
      await new Promise<void>((resolve, reject) => {
        signal.addEventListener("abort", () => reject(signal.reason), { once: true });
        void live.cleaned.then(resolve);
      });
      await this.commit.settled();
    }
    return this.get(id);
  }

  /** The run's row: from memory while it is live, else from the store. */
  private current(id: string): StoredRun {
    return this.live.get(id)?.run ?? this.get(id);
  }

  /** Removes every sandbox of this daemon that no live run owns (see reaper.ts). */
  async reap(): Promise<string[]> {
    if (this.reaping || this.stopping) return [];
    this.reaping = true;
    try {
      // Read after listing (inside): a run started meanwhile is in the map before its sandbox exists.
      const removed = await reapOrphans(this.deps.providers, () => new Set([...this.actors.keys()].map((id) => sandboxName(id))), this.deps.logger);
      this.deps.observer?.reaped?.(removed.length);
      return removed;
    } finally {
      this.reaping = false;
    }
  }

  /** A run's machine, observed by observe() below. */
  private newActor(id: string, make: (observe: (s: RunSnapshot) => void, onError: (e: unknown) => void) => PureActor): PureActor {
    return make(
      (snapshot) => this.observe(id, snapshot),
      (error) => this.deps.logger.error({ err: error, runId: id }, "run actor failed"),
    );
  }

  /** `fresh`: a run start() just made, whose `persisted` is its actor's snapshot now (a restored one's is the store's). */
  private track(id: string, actor: PureActor, initialPhase: RunPhase, stored: StoredRun, persisted: string, fresh = false): void {
    this.actors.set(id, actor);
    let markCleaned!: () => void;
    const cleaned = new Promise<void>((r) => (markCleaned = r));
    // A new run's first emission (at start) is the snapshot just stored: not serialised again.
    this.live.set(id, { run: { ...stored }, persisted, snapshot: fresh ? actor.getSnapshot() : null, cleaned, markCleaned, lastPhase: initialPhase });
    if (initialPhase === "queued") this.queue.add({ id, team: stored.team, environmentId: stored.environmentId, priority: stored.priority });
    if (ACTIVE_PHASES.has(initialPhase)) this.deadlines.set(id, stored.deadlineAt);
    actor.start();
  }

  /** Every state the run's machine enters: stored, and the queue, slots and deadline told. */
  private observe(id: string, snapshot: RunSnapshot): void {
    if (this.stopping) return;
    const live = this.live.get(id);
    const phase = phaseOf(snapshot.value);
    this.persist(id, snapshot);
    if (live && phase !== live.lastPhase) {
      this.deps.logger.info({ runId: id, from: live.lastPhase, to: phase, error: snapshot.context.error ?? undefined }, "run transition");
      live.lastPhase = phase;
    }
    if (phase !== "queued") this.queue.remove(id);
    if (!ACTIVE_PHASES.has(phase)) this.deadlines.delete(id);
    if (phase === "cleaned") {
      this.actors.delete(id);
      live?.markCleaned();
      this.live.delete(id);
      this.effects.forget(id);
      const held = this.holding.get(id);
      if (held) {
        this.holding.delete(id);
        this.queue.release(held);
      }
      this.pump();
    }
  }

  private persist(id: string, snapshot: RunSnapshot): void {
    const live = this.live.get(id);
    if (!live || snapshot === live.snapshot) return;
    live.snapshot = snapshot;
    const persisted = JSON.stringify(taskRunMachine.getPersistedSnapshot(snapshot));
    if (persisted === live.persisted) return; // e.g. the initial snapshot on start: already stored
    live.persisted = persisted;
    const prev = live.run;
    const now = Date.now();
    const phase = phaseOf(snapshot.value);
    const ctx = snapshot.context;
    const active = phase !== "queued";
    const finished = !["queued", "provisioning", "running"].includes(phase);
    const afterwards = [ctx.cleanupError && `cleanup failed: ${ctx.cleanupError}`, ctx.pullRequestError && `pull request not opened: ${ctx.pullRequestError}`].filter(Boolean).join("; ");
    const error = [ctx.error, afterwards].filter(Boolean).join("; ");
    prev.startedAt ??= active && phase !== "cancelled" ? now : null;
    prev.finishedAt ??= finished ? now : null;
    prev.cleanedAt ??= phase === "cleaned" ? now : null;
    prev.status = statusOf(phase, ctx.outcome);
    prev.phase = phase;
    prev.awaitingInput = awaitingInput(snapshot.value);
    prev.errorMessage = ctx.outcome === "completed" ? afterwards : error;
    prev.exitCode = ctx.exitCode;
    prev.updatedAt = now;
    this.movePhase(prev, phaseNameOf(phase), now, true);
    this.queueWrite(id, live);
  }

  /**
   * A phase boundary the machine does not see: the effects say when the setup script was
   * handed to the runner ("setup") and when the agent was let go ("running"). Written with
   * the run's current snapshot, so it is as durable as a transition.
   */
  private markPhase(id: string, phase: PhaseName, at: number): void {
    const live = this.live.get(id);
    if (!live || this.stopping) return;
    if (!this.movePhase(live.run, phase, at, false)) return;
    live.run.updatedAt = Date.now();
    this.queueWrite(id, live);
  }

  /**
   * Without a hold after setup, the runner starts the agent as soon as the script succeeds:
   * its first event that is not a setup line (or the script's failure) ends the setup.
   */
  private setupEndedBy(id: string, events: readonly RunnerEvent[]): void {
    const spans = this.live.get(id)?.run.phaseTimings;
    if (spans?.[spans.length - 1]?.phase !== "setup") return;
    const first = events.find((e) => !(e.kind === "log" && e.stream === "setup"));
    if (first) this.markPhase(id, "running", first.time);
  }

  /** Moves the run's timings on; tells the observer of the phase that ended. Whether anything changed. */
  private movePhase(run: StoredRun, phase: PhaseName | null, at: number, fromMachine: boolean): boolean {
    const before = run.phaseTimings.length;
    const closed = advancePhase(run.phaseTimings, phase, at, fromMachine);
    if (closed) this.deps.observer?.phaseEnded?.(run.id, run.provider, closed.phase, closed.end! - closed.start);
    return closed !== null || run.phaseTimings.length !== before;
  }

  private queueWrite(id: string, live: LiveRun): void {
    const r = live.run;
    // Only what the row's UPDATE takes (a copy: the run goes on changing before the flush).
    const transition: RunTransition = {
      status: r.status,
      phase: r.phase,
      errorMessage: r.errorMessage,
      exitCode: r.exitCode,
      startedAt: r.startedAt,
      finishedAt: r.finishedAt,
      cleanedAt: r.cleanedAt,
      updatedAt: r.updatedAt,
      awaitingInput: r.awaitingInput,
      phaseTimings: r.phaseTimings.map((p) => ({ ...p })),
      snapshotJson: live.persisted,
      machineVersion: MACHINE_VERSION,
    };
    this.commit.transition(id, transition);
  }

  /** Writes this turn's transitions and lines (see group-commit.ts): reads come after it. */
  private flush(): void {
    this.commit.flush();
  }

  /** Fills free slots from the queue, teams in turn (see admission.ts). */
  private pump(): void {
    while (!this.stopping && this.holding.size < this.deps.settings.maxConcurrentRuns) {
      const next = this.queue.take();
      if (!next) return;
      const actor = this.actors.get(next.id);
      if (!actor) {
        this.queue.release(next);
        continue;
      }
      this.holding.set(next.id, next);
      actor.send({ type: "ADMIT" });
    }
  }

  /** A restored run already in a slot. */
  private hold(run: StoredRun): void {
    const held = { team: run.team, environmentId: run.environmentId };
    this.holding.set(run.id, held);
    this.queue.hold(held);
  }

  /** A note from paddock itself in the run's log. */
  private system(id: string, ...texts: string[]): void {
    this.events.system(id, ...texts);
  }
}
