import { describe, expect, it } from "vitest";
import type { RunnerEvent } from "../agent/runner-protocol.js";
import { toStored } from "../runs/run-events.js";
import type { RunEventRow } from "../runs/records.js";
import { eventMessages } from "./mapping.js";
const redact = (t: string) => t.split("s3cret-value").join("[secret:K]");

describe("eventMessages", () => {
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

  it("maps stored rows to typed API events, each kind to its case", () => {
    const rows: RunEventRow[] = stored.map((s, i) => ({ seq: i + 1, time: s.time, stream: s.stream, text: s.text, kind: s.kind ?? "log", payload: s.payload ?? null }));
    const api = [...eventMessages(rows)].flat();
    expect(api.map((e) => e.kind.case)).toEqual(["log", "agentUpdate", "prompt", "permissionRequest", "permissionResolved", "turnEnded", "log"]);
    const update = api[1]!.kind.case === "agentUpdate" ? api[1]!.kind.value : undefined;
    expect(update).toMatchObject({ sessionId: "s1", updateKind: "tool_call", update: { title: "Write a.txt" } });
    const request = api[3]!.kind.case === "permissionRequest" ? api[3]!.kind.value : undefined;
    expect(request?.options.map((o) => o.optionId)).toEqual(["a"]);
    expect(Number(request?.expireTime?.seconds)).toBe(1_700_000_060);
    expect(api.map((e) => Number(e.seq))).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });
});
