import { create } from "@bufbuild/protobuf";
import { describe, expect, test } from "vitest";
import { RunEventSchema, type RunEvent } from "../src/gen/paddock/v1/task_run_pb.js";
import { conversation, diffLines } from "../web/conversation.js";

/** The web UI's reading of a run's events (web/conversation.ts), on events as StreamEvents sends them. */
let seq = 0n;
const event = (kind: RunEvent["kind"]): RunEvent => create(RunEventSchema, { seq: ++seq, kind });
const update = (updateKind: string, u: Record<string, unknown>) => event({ case: "agentUpdate", value: { $typeName: "paddock.v1.AgentUpdate", sessionId: "s", updateKind, update: { sessionUpdate: updateKind, ...u } as never, replayed: false } });
const chunk = (text: string) => update("agent_message_chunk", { content: { type: "text", text } });

describe("the conversation a run page shows", () => {
  test("chunks join into messages; a tool call takes its updates; a permission request takes its answer", () => {
    const events = [
      event({ case: "prompt", value: { $typeName: "paddock.v1.PromptSent", promptId: "p1", content: [{ type: "text", text: "write:a.txt" }], by: "task" } }),
      chunk("Hello"),
      chunk(" there\n"),
      update("agent_thought_chunk", { content: { type: "text", text: "thinking" } }),
      update("tool_call", { toolCallId: "t1", title: "Write a.txt", kind: "edit", status: "pending", content: [{ type: "diff", path: "/w/a.txt", oldText: null, newText: "x\n" }] }),
      event({ case: "permissionRequest", value: { $typeName: "paddock.v1.PermissionRequest", requestId: "r1", toolCall: { title: "Write a.txt" }, options: [{ $typeName: "paddock.v1.PermissionOption", optionId: "allow", name: "Allow", kind: "allow_once" }] } }),
      event({ case: "permissionResolved", value: { $typeName: "paddock.v1.PermissionResolved", requestId: "r1", optionId: "allow", by: "alice" } }),
      update("tool_call_update", { toolCallId: "t1", status: "completed", content: null }),
      update("plan", { entries: [{ content: "step", status: "completed" }] }),
      chunk("done"),
      event({ case: "turnEnded", value: { $typeName: "paddock.v1.TurnEnded", promptId: "p1", stopReason: "end_turn" } }),
      event({ case: "log", value: { $typeName: "paddock.v1.LogEntry", seq: 99n, stream: "stdout", text: "a log line is not conversation", continued: false } }),
    ];
    const items = conversation(events);
    expect(items.map((i) => i.type)).toEqual(["prompt", "message", "message", "tool", "permission", "plan", "message", "turn"]);
    expect(items[0]).toMatchObject({ text: "write:a.txt", by: "task" });
    expect(items[1]).toMatchObject({ text: "Hello there\n", thought: false });
    expect(items[2]).toMatchObject({ text: "thinking", thought: true });
    // The update's status wins; its null content does not erase the diff.
    expect(items[3]).toMatchObject({ id: "t1", update: { status: "completed", title: "Write a.txt", content: [{ type: "diff", path: "/w/a.txt" }] } });
    expect(items[4]).toMatchObject({ requestId: "r1", resolved: { optionId: "allow", by: "alice" } });
    expect(items[7]).toMatchObject({ stopReason: "end_turn" });
  });

  test("a diff shows the changed lines between the common head and tail", () => {
    expect(diffLines(null, "a\nb\n")).toEqual({ removed: [], added: ["a", "b"] });
    expect(diffLines("a\nb\nc\n", "a\nB\nc\n")).toEqual({ removed: ["b"], added: ["B"] });
    expect(diffLines("a\nb\n", "a\nb\nc\n")).toEqual({ removed: [], added: ["c"] });
    expect(diffLines("same\n", "same\n")).toEqual({ removed: [], added: [] });
  });
});
