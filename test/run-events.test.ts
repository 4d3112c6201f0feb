import { Code } from "@connectrpc/connect";
import { describe, expect } from "vitest";
import { AgentKind, RunMode, RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { allLogs, failureOf, test, watchToEnd, type Daemon } from "./fixtures.js";

async function events(d: Daemon, runId: string, kinds: string[] = []) {
  const out = [];
  for await (const res of d.grpcRuns.streamEvents({ runId, follow: false, kinds })) out.push(...res.events);
  return out;
}

describe("run events", () => {
  test("a command run's events are its log lines, in the same seq space as StreamLogs", async ({ daemon, repo }) => {
    const { task } = await daemon.tasks.createTask({ title: "events", repository: repo });
    const { run } = await daemon.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", "echo one; echo two >&2"] });
    expect(run!.agentKind).toBe(AgentKind.COMMAND);
    await watchToEnd(daemon, run!.id);
    const all = await events(daemon, run!.id);
    const logs = await allLogs(daemon, run!.id);
    expect(all.map((e) => e.kind.case)).toEqual(logs.map(() => "log"));
    expect(all.map((e) => (e.kind.case === "log" ? [e.seq, e.kind.value.stream, e.kind.value.text] : null))).toEqual(logs.map((l) => [l.seq, l.stream, l.text]));
    expect(await events(daemon, run!.id, ["turn_ended"])).toEqual([]);
    // Following a finished run ends once everything is replayed.
    const followed = [];
    for await (const res of daemon.runs.streamEvents({ runId: run!.id, follow: true, afterSeq: all[1]!.seq })) followed.push(...res.events);
    expect(followed.map((e) => e.seq)).toEqual(all.slice(2).map((e) => e.seq));
  });

  test("bad requests name the field; conversation calls need an ACP run", async ({ daemon, repo }) => {
    const { task } = await daemon.tasks.createTask({ title: "events", repository: repo });
    const bad = async (p: Promise<unknown>, code: Code, message: RegExp) => {
      const e = await failureOf(p);
      expect(e.code).toBe(code);
      expect(e.rawMessage).toMatch(message);
    };
    await bad(daemon.runs.startRun({ taskId: task!.id, agent: { preset: "gpt-9" } }), Code.InvalidArgument, /^agent\.preset: unknown preset "gpt-9"; known: claude-code, codex/);
    await bad(daemon.runs.startRun({ taskId: task!.id, agentCommand: ["true"], mode: RunMode.INTERACTIVE }), Code.InvalidArgument, /^mode: interactive runs need an ACP agent/);
    await bad(daemon.runs.startRun({ taskId: task!.id, agent: { kind: AgentKind.ACP } }), Code.InvalidArgument, /^agent\.command: an ACP agent needs a command or a preset/);
    const { run } = await daemon.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", "sleep 30"] });
    await bad(daemon.runs.streamEvents({ runId: run!.id, kinds: ["nope"] })[Symbol.asyncIterator]().next(), Code.InvalidArgument, /^kinds\[0\]: unknown kind "nope"/);
    await bad(daemon.runs.sendPrompt({ runId: run!.id, text: "more" }), Code.FailedPrecondition, /runs a command, not an ACP agent/);
    await bad(daemon.runs.cancelTurn({ runId: run!.id }), Code.FailedPrecondition, /runs a command, not an ACP agent/);
    await bad(daemon.runs.sendPrompt({ runId: run!.id }), Code.InvalidArgument, /^text: give text or content/);
    await daemon.runs.cancelRun({ runId: run!.id });
    const final = (await watchToEnd(daemon, run!.id)).pop()!;
    expect(final.status).toBe(RunStatus.CANCELLED);
  });
});
