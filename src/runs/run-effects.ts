import { setTimeout as sleep } from "node:timers/promises";
import type { AgentExit, TaskRunEvent } from "../../machines/task-run.machine.js";
import type { RunnerEvent, StartRequest } from "../agent/runner-protocol.js";
import { issueSandboxToken } from "../auth/sandbox-token.js";
import { isRetryable, SandboxError } from "../errors.js";
import { sandboxName, type SandboxProvider, type SandboxSpec } from "../sandbox/provider.js";
import { createRunnerClient } from "../sandbox/runner-client.js";
import type { StoredRun } from "../store/runs-repository.js";
import { networkOf, redactor, setupHash } from "./environments.js";
import type { RunManagerDeps } from "./run-manager.js";
import type { RunEvents } from "./run-events.js";
import { withRetry } from "./retry.js";

export interface RunEffectsDeps extends RunManagerDeps {
  events: RunEvents;
  /** The run's row as the manager holds it. */
  current: (id: string) => StoredRun;
  /** An event for the run's machine (turns of an interactive run). */
  send: (id: string, event: TaskRunEvent) => void;
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

  constructor(private readonly d: RunEffectsDeps) {}

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
    const provisioning = this.provisionOnce(id, signal);
    this.provisioning.set(id, provisioning);
    return provisioning;
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
    const spec: SandboxSpec = {
      runId: id,
      name,
      repositoryUrl: task.repositoryUrl,
      branch: run.branch,
      resultBranch: run.resultBranch,
      agentCommand: run.agentCommand,
      agent: { kind: run.agentKind, mode: run.runMode, permissionPolicy: run.permissionPolicy },
      prompt: task.description ? `${task.title}\n\n${task.description}` : task.title,
      publicKeyPem: this.d.keys.publicKeyPem,
      token,
      limits: run.limits,
      deadlineAt: run.deadlineAt,
      logBudget: this.d.settings.logBudget,
      network: this.networkOf(run),
      environmentId: run.environmentId,
      setupHash: setupHash(env),
      image: run.image,
    };
    const status = await withRetry(() => provider.provision(spec, signal, (line) => this.system(id, line)), signal);
    // The runner holds the agent until now: the environment is handed over at the last moment.
    const start = this.startRequest(run, provider);
    if (status.setupDone) delete start.setupScript; // the sandbox's snapshot was taken after it (the provider said so)
    const hold = !!status.holdAfterSetup && !!provider.afterSetup;
    Object.assign(start, { holdAfterSetup: hold || undefined, caFile: status.caFile });
    const runner = createRunnerClient(status.endpoint!, token);
    await withRetry(() => runner.start(start, signal), signal);
    if (start.setupScript) this.system(id, "setup script started");
    if (hold) {
      await provider.afterSetup!(spec, signal, (line) => this.system(id, line));
      await withRetry(() => runner.continueAfterSetup(signal), signal);
    }
    this.system(id, `agent ${start.setupScript ? "to start after setup" : "started"}: ${run.agentCommand.join(" ")}`);
  }

  /** Env vars and secrets of the run's environment; setup-only secrets go to setup alone. */
  private startRequest(run: StoredRun, provider: SandboxProvider): StartRequest {
    if (!run.environmentId) return {};
    const env = this.d.environments.get(run.environmentId);
    if (!env) throw new SandboxError(`environment ${run.environmentId} no longer exists`, false);
    const secrets = this.d.environments.secretValues(env.id);
    const pick = (setupOnly: boolean) => Object.fromEntries(secrets.filter((s) => s.setupOnly === setupOnly).map((s) => [s.name, s.value]));
    const stage = provider.stageEnv?.(run.id, networkOf(env)) ?? { setup: {}, agent: {} };
    return {
      env: { ...env.envVars, ...pick(false), ...stage.agent },
      setupEnv: { ...pick(true), ...stage.setup },
      setupScript: env.setupScript || undefined,
      // The runner redacts before anything is written: no secret is ever on its disk.
      redact: secrets.map(({ name, value }) => ({ name, value })),
    };
  }

  private networkOf(run: StoredRun) {
    return run.environmentId ? networkOf(this.d.environments.get(run.environmentId)) : null;
  }

  async supervise(id: string, signal: AbortSignal): Promise<AgentExit> {
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
        const status = await provider.inspect(name);
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
   * Everything the runner recorded that is not stored yet: after a cancel, a deadline or
   * the sandbox's death (its runner brought back for this), nothing it wrote down is lost.
   */
  private async drain(id: string, provider: SandboxProvider, signal: AbortSignal): Promise<void> {
    const run = this.d.current(id);
    const name = sandboxName(id);
    const token = await this.tokenFor(run);
    const endpoint = (await provider.inspect(name)).endpoint ?? (await provider.revive?.(name, id, signal).catch(() => null));
    if (!endpoint) return;
    const redact = this.redactorOf(run);
    const runner = createRunnerClient(endpoint, token);
    await runner.cancel(signal).catch(() => undefined); // a still-running agent stops writing first
    let cursor = this.d.runs.runnerCursor(id);
    for (;;) {
      const { events } = await runner.events(cursor, 0, signal);
      if (events.length === 0) return;
      this.ingest(id, events, redact);
      cursor = events[events.length - 1]!.seq;
    }
  }

  private redactorOf(run: StoredRun): (t: string) => string {
    return run.environmentId ? redactor(this.d.environments.secretValues(run.environmentId)) : (t: string) => t;
  }

  async cleanup(id: string, signal: AbortSignal): Promise<void> {
    const run = this.d.current(id);
    const provider = this.providerOf(run.provider);
    const name = sandboxName(id);
    await this.provisioning.get(id)?.catch(() => undefined);
    this.provisioning.delete(id);
    await this.drain(id, provider, signal).catch((error: unknown) => {
      if (signal.aborted) throw error;
      this.d.logger.warn({ err: error, runId: id }, "could not read the runner's last events");
    });
    const result = await withRetry(() => provider.destroy(name, signal), signal, { attempts: 5, baseMs: 500 });
    if (result.notes?.length) this.system(id, ...result.notes);
    if (result.resultCommit) {
      this.d.runs.setResultCommit(id, result.resultCommit);
      this.system(id, `the agent's work is on branch ${run.resultBranch} at ${result.resultCommit}`);
    }
    this.system(id, `sandbox ${name} removed`);
  }
}
