import { describe, expect, it } from "vitest";
import { SAMPLE_EVENTS, sampleRedact } from "./run-events.samples.js";
import { toStored } from "./run-events.js";


describe("toStored", () => {
  const stored = SAMPLE_EVENTS.map((e) => toStored(e, sampleRedact));

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
