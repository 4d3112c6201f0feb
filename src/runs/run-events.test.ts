import { describe, expect, it } from "vitest";
import type { RunnerEvent } from "../agent/runner-protocol.js";
import { toStored } from "./run-events.js";

const redact = (t: string) => t.split("s3cret-value").join("[secret:K]");

describe("toStored", () => {
  const at = { seq: 1, time: 1_700_000_000_000 };
  const events: RunnerEvent[] = [
    { ...at, kind: "log", stream: "agent", text: "hello s3cret-value" },
    { ...at, kind: "acp", sessionId: "s1", updateKind: "tool_call", update: { sessionUpdate: "tool_call", title: "Write a.txt", rawInput: { content: "s3cret-value" } } },
    { ...at, kind: "prompt", promptId: "p1", content: [{ type: "text", text: "fix it" }], by: "ci token" },
    { ...at, kind: "permission", requestId: "r1", toolCall: { title: "Run rm -rf" }, options: [{ optionId: "a", name: "Allow", kind: "allow_once" }], expiresAt: 1_700_000_060_000 },
    { ...at, kind: "permission_resolved", requestId: "r1", optionId: null, by: "timeout" },
    { ...at, kind: "turn_end", promptId: "p1", stopReason: "end_turn" },
    { ...at, kind: "exit", exitCode: 3, signal: null, stage: "agent", reason: "stop reason max_tokens" },
  ];
  const stored = events.map((e) => toStored(e, redact));

  it("gives every event its kind, a readable line and its JSON, redacted", () => {
    expect(stored.map((s) => [s.kind ?? "log", s.stream, s.text])).toEqual([
      ["log", "agent", "hello [secret:K]"],
      ["agent_update", "agent_update", ""],
      ["prompt", "prompt", "prompt from ci token: fix it"],
      ["permission_request", "permission", "the agent asks to Run rm -rf (request r1; options: a = Allow)"],
      ["permission_resolved", "permission", "request r1: rejected (by timeout)"],
      ["turn_ended", "turn", "turn ended: end_turn"],
      ["log", "system", "agent exited with code 3: stop reason max_tokens"],
    ]);
    expect(stored[1]!.payload).toContain("[secret:K]");
    expect(stored[1]!.payload).not.toContain("s3cret-value");
  });
});
