import { setTimeout as sleep } from "node:timers/promises";
import type { AgentExit, TaskRunEvent } from "../../machines/task-run.machine.js";
import type { RunnerEvent, StartRequest } from "../agent/runner-protocol.js";
import { issueSandboxToken } from "../auth/sandbox-token.js";
import { isRetryable, SandboxError } from "../errors.js";
import { sandboxName, type CleanupKeep, type HandoffSink, type SandboxProvider, type SandboxSpec } from "../sandbox/provider.js";
import { createRunnerClient, type RunnerClient } from "../sandbox/runner-client.js";
import type { StoredRun } from "../store/runs-repository.js";
import { brokeredPlaceholder, brokerRefusal, runSecrets, type RunSecret } from "./brokered-secrets.js";
import type { RunHandoff } from "../store/records.js";
import { transcriptOf } from "./transcript.js";
import { networkOf, redactor, setupHash } from "./environments.js";
import type { RunManagerDeps } from "./run-manager.js";
import type { RunEvents } from "./run-events.js";
import { withRetry } from "./retry.js";
import type { Gate } from "./admission.js";
import { isGitHostToken } from "./git-host-tokens.js";

export interface RunEffectsDeps extends RunManagerDeps {
  events: RunEvents;
  /** The run's row as the manager holds it. */
  current: (id: string) => StoredRun;
  /** An event for the run's machine (turns of an interactive run). */
  send: (id: string, event: TaskRunEvent) => void;
  /** Bounds restored runs' first calls to their provider (no thundering herd after a restart). */
  reconcile: Gate;
  /** A phase boundary the machine does not see: setup started, the agent let go. */
  markPhase: (id: string, phase: "setup" | "running", at: number) => void;
  /** Changes the run's handoff record (in memory and stored). */
  setHandoff: (id: string, change: Partial<RunHandoff>) => void;
}

/**
 * The machine's effects, bound into it by the manager: provision, supervise, cleanup. Each
 * is idempotent and abortable — after a restart any of them runs again for the same run.
 */
export class RunEffects {
  /** Provisioning effects still running, by run id, even after their actor was stopped. */
  private readonly provisioning = new Map<string, Promise<void>>();
  /** One sandbox token per live run: RS256 signing costs about a millisecond. */
  private readonly tokens = new Map<string, Promise<string>>();
  /** Restored runs whose effects have not reached their provider since the restart. */
  private readonly restoring = new Set<string>();

  constructor(private readonly d: RunEffectsDeps) {}

  /** The run was restored after a restart: its next effect reconciles through the gate. */
  restored(id: string): void {
    this.restoring.add(id);
  }

  /** `call` as is, or for a run just restored, once a reconcile slot is free. */
  private reconciled<T>(id: string, call: () => Promise<T>): Promise<T> {
    return this.restoring.delete(id) ? this.d.reconcile.run(call) : call();
  }

  /** A run is cleaned: its token is signed again if it ever comes back. */
  forget(id: string): void {
    this.tokens.delete(id);
  }

  /** A note from paddock itself in the run's log. */
  private system(id: string, ...texts: string[]): void {
    this.d.events.system(id, ...texts);
  }

  providerOf(providerName: string): SandboxProvider {
    const provider = this.d.providers.get(providerName);
    if (!provider) throw new SandboxError(`provider ${providerName} is not configured on this daemon`, false);
    return provider;
  }

  /** A token valid until an hour past the run's deadline; signed once per run per daemon start. */
  tokenFor(run: StoredRun): Promise<string> {
    let token = this.tokens.get(run.id);
    if (!token) {
      const ttl = Math.max(60, Math.ceil((run.deadlineAt - Date.now()) / 1000) + 3600);
      token = issueSandboxToken(this.d.keys, run.id, ttl);
      this.tokens.set(run.id, token);
    }
    return token;
  }

  /** Kept past an abort: cleanup waits for it, or a sandbox created after the cancel would outlive its run. */
  provision(id: string, signal: AbortSignal): Promise<void> {
    const provisioning = this.counted(id, "provision", signal, this.reconciled(id, () => this.provisionOnce(id, signal)));
    this.provisioning.set(id, provisioning);
    return provisioning;
  }

  /** The effect, with its failure counted as a sandbox error unless the run was stopped meanwhile. */
  private counted<T>(id: string, operation: "provision" | "supervise" | "cleanup", signal: AbortSignal, effect: Promise<T>): Promise<T> {
    return effect.catch((error: unknown) => {
      if (!signal.aborted) this.d.observer?.sandboxError?.(this.d.current(id).provider, operation);
      throw error;
    });
  }

  private async provisionOnce(id: string, signal: AbortSignal): Promise<void> {
    const run = this.d.current(id);
    const task = this.d.tasks.get(run.taskId);
    if (!task) throw new SandboxError(`task ${run.taskId} of run ${id} is gone`, false);
    const provider = this.providerOf(run.provider);
    const name = sandboxName(id);
    this.system(
      id,
      `provisioning ${provider.name} sandbox ${name}`,
      ...(provider.enforcesNetworkPolicy ? [] : [`note: the ${provider.name} provider runs the agent on the host; network policy is not enforced`]),
    );
    const token = await this.tokenFor(run);
    const env = run.environmentId ? this.d.environments.get(run.environmentId) : undefined;
    const secrets = this.secretsOf(run, provider);
    const brokered = secrets.secrets.filter((s) => s.broker).map((s) => s.name);
    // Checked again here: the environment may have changed since the run was started.
    const refusal = brokerRefusal(provider, brokered);
    if (refusal) throw new SandboxError(refusal, false);
    if (brokered.length > 0) this.system(id, `brokered secrets (the sandbox holds placeholders, the egress proxy adds the values): ${brokered.join(", ")}`);
    if (secrets.notes.length > 0) this.system(id, ...secrets.notes);
    const spec: SandboxSpec = {
      runId: id,
      name,
      repositoryUrl: task.repositoryUrl,
      branch: run.branch,
      resultBranch: run.resultBranch,
      agentCommand: run.agentCommand,
      agent: { kind: run.agentKind, mode: run.runMode, permissionPolicy: run.permissionPolicy },
      prompt: this.promptOf(run, task.description ? `${task.title}\n\n${task.description}` : task.title),
      publicKeyPem: this.d.keys.publicKeyPem,
      token,
      limits: run.limits,
      deadlineAt: run.deadlineAt,
      logBudget: this.d.settings.logBudget,
      network: this.networkOf(run),
      environmentId: run.environmentId,
      setupHash: setupHash(env),
      image: run.image,
      brokered: brokered.length > 0,
      handoff: this.handoffOf(run),
      warmPool: env?.warmPool || undefined,
    };
    const status = await withRetry(() => provider.provision(spec, signal, (line) => this.system(id, line)), signal);
    if (provider.afterSetup) this.d.observer?.snapshotLookup?.(provider.name, !!status.setupDone);
    // The runner holds the agent until now: the environment is handed over at the last moment.
    const start = this.startRequest(run, provider, secrets.secrets);
    if (status.setupDone) delete start.setupScript; // the sandbox's snapshot was taken after it (the provider said so)
    const hold = !!status.holdAfterSetup && !!provider.afterSetup;
    Object.assign(start, { holdAfterSetup: hold || undefined, caFile: status.caFile });
    const runner = createRunnerClient(status.endpoint!, token);
    const started = Date.now();
    await withRetry(() => runner.start(start, signal), signal);
    if (start.setupScript) {
      this.d.markPhase(id, "setup", started);
      this.system(id, "setup script started");
    }
    if (hold) {
      await provider.afterSetup!(spec, signal, (line) => this.system(id, line));
      await withRetry(() => runner.continueAfterSetup(signal), signal);
      this.d.markPhase(id, "running", Date.now());
    }
    this.system(id, `agent ${start.setupScript ? "to start after setup" : "started"}: ${run.agentCommand.join(" ")}`);
  }

  /** The run's secrets as applied on this provider (preset keys brokered where it can), with notes for the log. */
  secretsOf(run: StoredRun, provider: SandboxProvider): { secrets: RunSecret[]; notes: string[] } {
    const env = run.environmentId ? this.d.environments.get(run.environmentId) : undefined;
    if (!env) return { secrets: [], notes: [] };
    return runSecrets(this.d.environments.secretValues(env.id), { agentCommand: run.agentCommand, envVars: env.envVars, providerBrokers: !!provider.brokersSecrets });
  }

  /** A run from a handoff goes on with its own prompt; an interactive one with none waits. */
  private promptOf(run: StoredRun, taskPrompt: string): string {
    if (!run.handoff.uploadId) return taskPrompt;
    if (run.handoff.prompt) return run.handoff.prompt;
    return run.runMode === "interactive" ? "" : "Go on with the task where the conversation left off.";
  }

  /** What the sandbox restores for a run from a handoff: the upload's state and conversation. */
  private handoffOf(run: StoredRun): SandboxSpec["handoff"] {
    if (!run.handoff.uploadId || !this.d.handoffs) return undefined;
    const { manifest: m, bundle } = this.d.handoffs.upload(run.handoff.uploadId, run.team);
    return { bundle, head: m.head, index: m.index, worktree: m.worktree, conversation: m.conversation, sessionId: m.sessionId, sourceCwd: m.sourceCwd, files: m.files };
  }

  /** What the runner gets at /start: the environment, and a handoff's transcript. */
  private startRequest(run: StoredRun, provider: SandboxProvider, secrets: RunSecret[]): StartRequest {
    const transcript = run.handoff.sourceRunId ? transcriptOf(this.d.runs, run.handoff.sourceRunId) : "";
    const handoff: StartRequest = transcript ? { handoffTranscript: { runId: run.handoff.sourceRunId!, text: transcript } } : {};
    return { ...this.environmentStart(run, provider, secrets), ...handoff };
  }

  /**
   * Env vars and secrets of the run's environment; setup-only secrets go to setup alone. A
   * brokered secret is its placeholder: its value never enters the sandbox, not even for
   * the runner's redaction (the daemon redacts what it ingests with every value).
   */
  private environmentStart(run: StoredRun, provider: SandboxProvider, secrets: RunSecret[]): StartRequest {
    if (!run.environmentId) return {};
    const env = this.d.environments.get(run.environmentId);
    if (!env) throw new SandboxError(`environment ${run.environmentId} no longer exists`, false);
    // Git host tokens stay with the daemon (it pushes and opens pull requests) unless the
    // environment grants them; a brokered one never enters the sandbox anyway (a placeholder does).
    const given = (name: string, brokered = false) => env.grantGitTokens || brokered || !isGitHostToken(name);
    const shown = secrets.filter((s) => given(s.name, !!s.broker));
    const pick = (setupOnly: boolean) =>
      Object.fromEntries(shown.filter((s) => s.setupOnly === setupOnly).map((s) => [s.name, s.broker ? brokeredPlaceholder(s.name) : s.value]));
    const stage = provider.stageEnv?.(run.id, networkOf(env), secrets.some((s) => s.broker)) ?? { setup: {}, agent: {} };
    const envVars = Object.fromEntries(Object.entries(env.envVars).filter(([name]) => given(name)));
    return {
      env: { ...envVars, ...pick(false), ...stage.agent },
      setupEnv: { ...pick(true), ...stage.setup },
      setupScript: env.setupScript || undefined,
      // The runner redacts before anything is written: no plain secret is ever on its disk
      // (brokered values never reach it; the daemon redacts them when it stores logs).
      redact: secrets.filter((s) => !s.broker).map(({ name, value }) => ({ name, value })),
    };
  }

  private networkOf(run: StoredRun) {
    return run.environmentId ? networkOf(this.d.environments.get(run.environmentId)) : null;
  }

  supervise(id: string, signal: AbortSignal): Promise<AgentExit> {
    return this.counted(id, "supervise", signal, this.superviseOnce(id, signal));
  }

  private async superviseOnce(id: string, signal: AbortSignal): Promise<AgentExit> {
    const run = this.d.current(id);
    const redact = this.redactorOf(run);
    const provider = this.providerOf(run.provider);
    const name = sandboxName(id);
    const token = await this.tokenFor(run);
    let cursor = this.d.runs.runnerCursor(id);
    let endpoint: string | undefined;
    let failures = 0;
    /** The next batch, asked for while the last one is being stored (a flood keeps both busy). */
    let next: Promise<RunnerEvent[]> | null = null;
    for (;;) {
      signal.throwIfAborted();
      if (!endpoint) {
        const status = await this.reconciled(id, () => provider.inspect(name));
        if (status.state !== "running" || !status.endpoint) {
          throw new SandboxError(`sandbox ${name} is ${status.state}`, false);
        }
        endpoint = status.endpoint;
      }
      let events: RunnerEvent[];
      try {
        events = await (next ?? createRunnerClient(endpoint, token).events(cursor, this.d.settings.pollWaitMs, signal).then((r) => r.events));
        next = null;
        failures = 0;
      } catch (error) {
        next = null;
        if (signal.aborted) throw error;
        if (!isRetryable(error) || ++failures > 5) throw error;
        endpoint = undefined; // look the sandbox up again: it may have died
        await sleep(100 * 2 ** failures, undefined, { signal });
        continue;
      }
      if (events.length === 0) continue;
      const last = events[events.length - 1]!;
      cursor = last.seq;
      if (last.kind !== "exit") {
        next = createRunnerClient(endpoint, token).events(cursor, this.d.settings.pollWaitMs, signal).then((r) => r.events);
        next.catch(() => undefined); // handled when awaited
      }
      const exit = this.ingest(id, events, redact);
      if (exit) return exit;
    }
  }

  private ingest(id: string, events: RunnerEvent[], redact: (t: string) => string): AgentExit | null {
    const exit = this.d.events.ingest(id, events, redact);
    for (const e of events) {
      // Only the runner writes stream "handoff": how the agent took the conversation back.
      const m = e.kind === "log" && e.stream === "handoff" ? /^resume: (session_load|transcript|none):/.exec(e.text) : null;
      if (m) this.d.setHandoff(id, { resume: m[1] as RunHandoff["resume"] });
    }
    // An interactive run's turns move its machine between working and awaiting_input.
    if (this.d.current(id).runMode === "interactive") {
      for (const e of events) {
        if (e.kind === "turn_end") this.d.send(id, { type: "TURN_ENDED" });
        else if (e.kind === "prompt") this.d.send(id, { type: "PROMPTED" });
      }
    }
    return exit;
  }

  /**
   * The runner of the run's sandbox, its agent stopped (a still-running agent stops writing
   * first); after the sandbox's death its runner is brought back for this. Null when there
   * is none to reach.
   */
  private async reach(id: string, provider: SandboxProvider, signal: AbortSignal): Promise<{ runner: RunnerClient; endpoint: string } | null> {
    const run = this.d.current(id);
    const name = sandboxName(id);
    const token = await this.tokenFor(run);
    const endpoint = (await provider.inspect(name)).endpoint ?? (await provider.revive?.(name, id, signal).catch(() => null));
    if (!endpoint) return null;
    const runner = createRunnerClient(endpoint, token);
    await runner.cancel(signal).catch(() => undefined);
    return { runner, endpoint };
  }

  /**
   * Everything the runner recorded that is not stored yet: after a cancel, a deadline or
   * the sandbox's death, nothing it wrote down is lost. A failure is logged, not thrown.
   */
  private async drain(id: string, runner: RunnerClient, signal: AbortSignal): Promise<void> {
    try {
      const redact = this.redactorOf(this.d.current(id));
      let cursor = this.d.runs.runnerCursor(id);
      for (;;) {
        const { events } = await runner.events(cursor, 0, signal);
        if (events.length === 0) return;
        this.ingest(id, events, redact);
        cursor = events[events.length - 1]!.seq;
      }
    } catch (error) {
      if (signal.aborted) throw error;
      this.d.logger.warn({ err: error, runId: id }, "could not read the runner's last events");
    }
  }

  private redactorOf(run: StoredRun): (t: string) => string {
    return run.environmentId ? redactor(this.d.environments.secretValues(run.environmentId)) : (t: string) => t;
  }

  /**
   * The run's handoff state, taken before the work is exported (which commits what the
   * agent left uncommitted) and kept, so a finished run can still be handed off. A run
   * asked to hand off says in its log when this failed; others only in the daemon's log.
   */
  private async keepHandoff(run: StoredRun, runner: RunnerClient, signal: AbortSignal): Promise<void> {
    if (!this.wantsHandoff(run)) return;
    const timeout = AbortSignal.any([signal, AbortSignal.timeout(120_000)]);
    try {
      await this.d.handoffs!.takeFromRunner(run, runner, timeout);
    } catch (error) {
      if (signal.aborted) throw error;
      this.handoffNotKept(run, error);
    }
  }

  /** Whether cleanup keeps the run's handoff state: not kept yet, and the settings (or a handoff) ask for it. */
  private wantsHandoff(run: StoredRun): boolean {
    if (!this.d.handoffs || this.d.handoffs.stored(run.id)) return false;
    const keep = this.d.settings.handoffKeep ?? "all";
    return !!run.handoff.handedOffAt || !(keep === "none" || (keep === "acp" && run.agentKind !== "acp"));
  }

  private handoffNotKept(run: StoredRun, error: unknown): void {
    if (run.handoff.handedOffAt) this.system(run.id, `the run's handoff state could not be taken: ${(error as Error).message}`);
    else this.d.logger.info({ err: error, runId: run.id }, "no handoff state kept for the run");
  }

  /**
   * Where a provider that takes the handoff state with the work (in one capture, at
   * destroy) puts it: a file of the run's kept state, checked and kept as takeFromRunner does.
   */
  private async handoffSink(run: StoredRun, signal: AbortSignal): Promise<HandoffSink | undefined> {
    if (!this.wantsHandoff(run)) return undefined;
    const handoffs = this.d.handoffs!;
    const file = await handoffs.bundleFile(run.id);
    return {
      file,
      maxBytes: handoffs.limitBytes,
      keep: async (state) => {
        await handoffs.keep(run, state, file).catch((error: unknown) => this.handoffNotKept(run, error));
      },
      failed: (error) => void handoffs.failed(run.id, error, file).then((e) => this.handoffNotKept(run, e)),
      takeFrom: (runner) => this.keepHandoff(run, runner, signal),
    };
  }

  cleanup(id: string, signal: AbortSignal): Promise<void> {
    return this.counted(id, "cleanup", signal, this.reconciled(id, () => this.cleanupOnce(id, signal)));
  }

  private async cleanupOnce(id: string, signal: AbortSignal): Promise<void> {
    const run = this.d.current(id);
    const provider = this.providerOf(run.provider);
    const name = sandboxName(id);
    await this.provisioning.get(id)?.catch(() => undefined);
    this.provisioning.delete(id);
    const reached = await this.reach(id, provider, signal).catch((error: unknown) => {
      if (signal.aborted) throw error;
      this.d.logger.warn({ err: error, runId: id }, "could not reach the runner for its last events");
      return null;
    });
    const drained = reached ? this.drain(id, reached.runner, signal) : null;
    drained?.catch(() => undefined); // it throws only when aborted; awaited below
    // A provider that collects the handoff state takes it with the work, in one capture,
    // while the last events are read (it removes the sandbox only once they are); with
    // others the state is taken here first, before the export commits what was left uncommitted.
    let keep: CleanupKeep | undefined;
    if (reached && provider.collectsHandoff) {
      keep = { endpoint: reached.endpoint, handoff: await this.handoffSink(run, signal), drained: drained! };
    } else if (reached) {
      await drained;
      await this.keepHandoff(run, reached.runner, signal);
    }
    const result = await withRetry(() => provider.destroy(name, signal, keep), signal, { attempts: 5, baseMs: 500 });
    await drained;
    if (result.notes?.length) this.system(id, ...result.notes);
    if (result.resultCommit) {
      this.d.runs.setResultCommit(id, result.resultCommit);
      this.system(id, `the agent's work is on branch ${run.resultBranch} at ${result.resultCommit}`);
    }
    this.system(id, `sandbox ${name} removed`);
    if (run.handoff.uploadId) await this.d.handoffs?.removeUpload(run.handoff.uploadId);
  }
}
