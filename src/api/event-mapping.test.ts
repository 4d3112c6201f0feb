import { describe, expect, it } from "vitest";
import { SAMPLE_EVENTS, sampleRedact } from "../runs/run-events.samples.js";
import { toStored } from "../runs/run-events.js";
import type { RunEventRow } from "../runs/records.js";
import { eventMessages } from "./mapping.js";

describe("eventMessages", () => {
  const stored = SAMPLE_EVENTS.map((e) => toStored(e, sampleRedact));

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
