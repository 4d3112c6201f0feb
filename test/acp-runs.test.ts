import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { resolve } from "node:path";
import { describe, expect } from "vitest";
import { AgentKind, PermissionPolicy, RunMode, RunStatus, type RunEvent } from "../src/gen/paddock/v1/task_run_pb.js";
import { TokenService } from "../src/gen/paddock/v1/token_pb.js";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { TaskRunService } from "../src/gen/paddock/v1/task_run_pb.js";
import { allLogs, bearer, cleanUp, failureOf, sh, startDaemon, test, watchToEnd, type Daemon } from "./fixtures.js";

/**
 * ACP runs through the whole daemon: a scripted ACP agent (test/fixtures, on the SDK's agent
 * side) driven by the real runner on the local provider, observed and steered by real API
 * clients. Each prompt's words are the agent's script (see the fixture).
 */
const AGENT = ["node", resolve(import.meta.dirname, "fixtures", "scripted-acp-agent.mjs")];

async function acpRun(d: Daemon, repo: string, script: string, opts: { mode?: RunMode; policy?: PermissionPolicy } = {}) {
  const { task } = await d.tasks.createTask({ title: script, repository: repo });
  const { run } = await d.runs.startRun({ taskId: task!.id, agent: { kind: AgentKind.ACP, command: AGENT }, mode: opts.mode, permissionPolicy: opts.policy });
  return run!;
}

async function eventsOf(d: Daemon, runId: string): Promise<RunEvent[]> {
  const out: RunEvent[] = [];
  for await (const res of d.grpcRuns.streamEvents({ runId, follow: false })) out.push(...res.events);
  return out;
}

/** Follows the run's events until `until` holds for one; returns everything seen. */
async function followUntil(d: Daemon, runId: string, until: (e: RunEvent) => boolean, afterSeq = 0n): Promise<RunEvent[]> {
  const seen: RunEvent[] = [];
  const abort = new AbortController();
  try {
    for await (const res of d.runs.streamEvents({ runId, follow: true, afterSeq }, { signal: abort.signal, timeoutMs: 60_000 })) {
      seen.push(...res.events);
      if (res.events.some(until)) break;
    }
  } finally {
    abort.abort();
  }
  return seen;
}

const kinds = (events: RunEvent[]) => events.map((e) => e.kind.case);

describe("ACP runs", () => {
  test("a background run: updates, a plan, a tool call with its diff, the file on the run's branch, COMPLETED", async ({ daemon, repo }) => {
    const run = await acpRun(daemon, repo, "chunks plan write:notes.txt say:done");
    expect(run.agentKind).toBe(AgentKind.ACP);
    const final = (await watchToEnd(daemon, run.id)).pop()!;
    expect(final.status).toBe(RunStatus.COMPLETED);
    const events = await eventsOf(daemon, run.id);
    expect(kinds(events)).toContain("prompt");
    expect(kinds(events)).toContain("agentUpdate");
    expect(kinds(events)).toContain("turnEnded");
    const updates = events.flatMap((e) => (e.kind.case === "agentUpdate" ? [e.kind.value] : []));
    expect(updates.map((u) => u.updateKind)).toEqual(expect.arrayContaining(["agent_message_chunk", "plan", "tool_call", "tool_call_update"]));
    const toolCall = updates.find((u) => u.updateKind === "tool_call")!;
    expect(JSON.stringify(toolCall.update)).toContain("notes.txt");
    expect(JSON.stringify(updates.filter((u) => u.updateKind.startsWith("tool_call")).map((u) => u.update))).toContain('"type":"diff"');
    const turn = events.find((e) => e.kind.case === "turnEnded")!;
    expect(turn.kind.case === "turnEnded" && turn.kind.value.stopReason).toBe("end_turn");
    // The readable projection: whole lines of the agent's messages, no raw updates.
    const lines = await allLogs(daemon, run.id);
    expect(lines.filter((l) => l.stream === "agent").map((l) => l.text)).toEqual(expect.arrayContaining(["Hello from the agent.", "Second line"]));
    expect(lines.map((l) => l.stream)).not.toContain("agent_update");
    // Seqs: one gapless space across every kind.
    expect(events.map((e) => Number(e.seq))).toEqual(events.map((_, i) => i + 1));
    expect(sh(repo, "git", "show", `${final.resultBranch}:notes.txt`)).not.toBe("");
  });

  test("a background turn ending otherwise fails the run and says why; a crash mid-turn says so", async ({ daemon, repo }) => {
    const refused = await acpRun(daemon, repo, "say:no stop:refusal");
    const a = (await watchToEnd(daemon, refused.id)).pop()!;
    expect(a.status).toBe(RunStatus.FAILED);
    expect(a.errorMessage).toMatch(/^agent exited with code \d+/);
    expect((await allLogs(daemon, refused.id)).some((l) => l.stream === "system" && /refusal/.test(l.text))).toBe(true);
    const crashed = await acpRun(daemon, repo, "say:working crash");
    const b = (await watchToEnd(daemon, crashed.id)).pop()!;
    expect(b.status).toBe(RunStatus.FAILED);
    expect((await allLogs(daemon, crashed.id)).some((l) => l.stream === "system" && /crash/.test(l.text))).toBe(true);
  });

  test("an interactive run: awaiting input between turns, a follow-up prompt attributed to its token, a permission answered by a client, a cancelled turn", async ({ daemon, repo }) => {
    // A second client with a token of its own name, as a teammate watching the run.
    const { secret } = await createClient(TokenService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", interceptors: [bearer(daemon.adminToken)] })).createToken({
      team: "default",
      name: "reviewer",
      scopes: ["runs:read", "runs:write"],
    });
    const reviewer = createClient(TaskRunService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", interceptors: [bearer(secret)] }));

    const run = await acpRun(daemon, repo, "say:ready", { mode: RunMode.INTERACTIVE, policy: PermissionPolicy.ASK });
    expect(run.mode).toBe(RunMode.INTERACTIVE);
    await followUntil(daemon, run.id, (e) => e.kind.case === "turnEnded");
    for (let i = 0; i < 100 && !(await daemon.runs.getRun({ runId: run.id })).run!.awaitingInput; i++) await new Promise((r) => setTimeout(r, 50));
    expect((await daemon.runs.getRun({ runId: run.id })).run).toMatchObject({ phase: "running", awaitingInput: true });

    // A prompt that asks permission: parked, seen by every follower, answered by the reviewer.
    const { promptId } = await reviewer.sendPrompt({ runId: run.id, text: "write:asked.txt", idempotencyKey: "k1" });
    const again = await reviewer.sendPrompt({ runId: run.id, text: "write:asked.txt", idempotencyKey: "k1" });
    expect(again.promptId).toBe(promptId);
    const asked = await followUntil(daemon, run.id, (e) => e.kind.case === "permissionRequest");
    const request = asked.find((e) => e.kind.case === "permissionRequest")!;
    if (request.kind.case !== "permissionRequest") throw new Error("unreachable");
    const allow = request.kind.value.options.find((o) => o.kind.startsWith("allow"))!;
    await reviewer.respondPermission({ runId: run.id, requestId: request.kind.value.requestId, optionId: allow.optionId });
    const late = await failureOf(daemon.runs.respondPermission({ runId: run.id, requestId: request.kind.value.requestId, optionId: allow.optionId }));
    expect(late.code).toBe(Code.FailedPrecondition);
    const resolved = await followUntil(daemon, run.id, (e) => e.kind.case === "turnEnded", request.seq);
    const resolution = resolved.find((e) => e.kind.case === "permissionResolved");
    expect(resolution?.kind.case === "permissionResolved" && resolution.kind.value).toMatchObject({ optionId: allow.optionId, by: "reviewer" });
    const prompts = (await eventsOf(daemon, run.id)).flatMap((e) => (e.kind.case === "prompt" ? [e.kind.value] : []));
    expect(prompts.map((p) => p.by)).toEqual(["task", "reviewer"]); // the retried prompt was sent once

    // A turn that hangs is cancelled; the run goes on, then is completed from outside.
    await daemon.runs.sendPrompt({ runId: run.id, text: "say:thinking hang" });
    await followUntil(daemon, run.id, (e) => e.kind.case === "agentUpdate" && JSON.stringify(e.kind.value.update).includes("thinking"));
    await daemon.runs.cancelTurn({ runId: run.id });
    const cancelled = await followUntil(daemon, run.id, (e) => e.kind.case === "turnEnded" && e.kind.value.stopReason === "cancelled");
    expect(cancelled.length).toBeGreaterThan(0);
    expect((await daemon.runs.getRun({ runId: run.id })).run!.phase).toBe("running");
    await daemon.runs.completeRun({ runId: run.id, status: RunStatus.COMPLETED });
    const final = (await watchToEnd(daemon, run.id)).pop()!;
    expect(final.status).toBe(RunStatus.COMPLETED);
    expect(sh(repo, "git", "show", `${final.resultBranch}:asked.txt`)).not.toBe("");
  });

  test("a daemon stopped mid-conversation resumes it: every event once, and the next prompt still answered", async ({ repo }) => {
    const first = await startDaemon();
    let daemon = first;
    try {
      const run = await acpRun(daemon, repo, "say:one", { mode: RunMode.INTERACTIVE });
      await followUntil(daemon, run.id, (e) => e.kind.case === "turnEnded");
      await daemon.app.stop();
      daemon = await first.restart();
      await daemon.runs.sendPrompt({ runId: run.id, text: "say:two" });
      const events = await followUntil(daemon, run.id, (e) => e.kind.case === "agentUpdate" && JSON.stringify(e.kind.value.update).includes("two"));
      expect(events.length).toBeGreaterThan(0);
      await daemon.runs.cancelRun({ runId: run.id });
      await watchToEnd(daemon, run.id);
      const all = await eventsOf(daemon, run.id);
      expect(all.map((e) => Number(e.seq))).toEqual(all.map((_, i) => i + 1));
      const turns = all.filter((e) => e.kind.case === "turnEnded");
      expect(turns.length).toBeGreaterThanOrEqual(2);
      const said = all.flatMap((e) => (e.kind.case === "agentUpdate" ? [JSON.stringify(e.kind.value.update)] : [])).filter((u) => u.includes('"one') || u.includes("one\\n"));
      expect(said.length).toBeLessThanOrEqual(1); // not doubled by the restart
    } finally {
      await cleanUp(daemon);
    }
  });

  test("an environment's agent, mode and idle timeout apply to runs that name none; a bad one is refused naming the field", async ({ daemon, repo }) => {
    const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", interceptors: [bearer(daemon.adminToken)] }));
    const bad = await failureOf(envs.createEnvironment({ environment: { name: "bad", networkAccess: NetworkAccess.FULL, agent: { preset: "gpt-9" } } }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.rawMessage).toMatch(/^environment\.agent\.preset: unknown preset "gpt-9"/);
    const { environment } = await envs.createEnvironment({
      environment: { name: "acp", networkAccess: NetworkAccess.FULL, agent: { kind: AgentKind.ACP, command: AGENT }, mode: RunMode.INTERACTIVE, idleTimeout: { seconds: 2n } },
    });
    expect(environment!.idleTimeout?.seconds).toBe(2n);
    const { task } = await daemon.tasks.createTask({ title: "say:hi", repository: repo, environmentId: environment!.id });
    const { run } = await daemon.runs.startRun({ taskId: task!.id });
    expect(run).toMatchObject({ agentKind: AgentKind.ACP, mode: RunMode.INTERACTIVE, permissionPolicy: PermissionPolicy.ASK });
    // Nobody prompts after the first turn: the idle timeout completes the run.
    const final = (await watchToEnd(daemon, run!.id)).pop()!;
    expect(final.status).toBe(RunStatus.COMPLETED);
    expect(kinds(await eventsOf(daemon, run!.id))).toContain("turnEnded");
  });
});
