import type { RunnerEvent } from "../agent/runner-protocol.js";

/** One event of every kind a runner records, with a secret in places, for the tests of storing and mapping them. */
export const SAMPLE_SECRET = "s3cret-value";
export const sampleRedact = (t: string) => t.split(SAMPLE_SECRET).join("[secret:K]");

const at = { seq: 1, time: 1_700_000_000_000 };
export const SAMPLE_EVENTS: RunnerEvent[] = [
  { ...at, kind: "log", stream: "agent", text: `hello ${SAMPLE_SECRET}` },
  { ...at, kind: "acp", sessionId: "s1", updateKind: "tool_call", update: { sessionUpdate: "tool_call", title: "Write a.txt", rawInput: { content: SAMPLE_SECRET } } },
  { ...at, kind: "prompt", promptId: "p1", content: [{ type: "text", text: "fix it" }], by: "ci token" },
  { ...at, kind: "permission", requestId: "r1", toolCall: { title: "Run rm -rf" }, options: [{ optionId: "a", name: "Allow", kind: "allow_once" }], expiresAt: 1_700_000_060_000 },
  { ...at, kind: "permission_resolved", requestId: "r1", optionId: null, by: "timeout" },
  { ...at, kind: "turn_end", promptId: "p1", stopReason: "end_turn" },
  { ...at, kind: "exit", exitCode: 3, signal: null, stage: "agent", reason: "stop reason max_tokens" },
];
