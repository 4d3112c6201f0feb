import { afterEach, describe, expect, it, vi } from "vitest";
import { AcpProjection } from "./acp-projection.js";

const chunk = (text: string) => ({ sessionUpdate: "agent_message_chunk", content: { type: "text", text } });

describe("the readable projection of ACP updates", () => {
  afterEach(() => void vi.useRealTimers());

  it("coalesces message chunks into lines, written out at a newline, before other lines and at a flush", () => {
    const lines: string[] = [];
    const p = new AcpProjection((l) => lines.push(l));
    for (const t of ["Hel", "lo\r\nwor", "ld\n\nand ", "more"]) p.update(chunk(t));
    expect(lines).toEqual(["Hello", "world", ""]);
    p.update({ sessionUpdate: "tool_call", toolCallId: "t1", title: "Edit a.ts", kind: "edit", status: "pending" });
    p.update({ sessionUpdate: "tool_call_update", toolCallId: "t1", status: "in_progress" });
    p.update({ sessionUpdate: "tool_call_update", toolCallId: "t1", status: "completed" });
    p.update({ sessionUpdate: "agent_thought_chunk", content: { type: "text", text: "thinking\n" } });
    p.update(chunk("the end"));
    p.flush();
    expect(lines).toEqual(["Hello", "world", "", "and more", "tool: Edit a.ts [edit]", "tool completed: Edit a.ts", "the end"]);
  });

  it("writes out a partial line after a pause, and a long one in pieces", () => {
    vi.useFakeTimers();
    const lines: string[] = [];
    const p = new AcpProjection((l) => lines.push(l));
    p.update(chunk("waiting"));
    vi.advanceTimersByTime(150);
    p.update(chunk(" still"));
    vi.advanceTimersByTime(150);
    expect(lines).toEqual([]);
    vi.advanceTimersByTime(100);
    expect(lines).toEqual(["waiting still"]);
    p.update(chunk("x".repeat(5000)));
    expect(lines.slice(1)).toEqual(["x".repeat(4096)]);
    p.flush();
    expect(lines.slice(2)).toEqual(["x".repeat(904)]);
  });

  it("summarises a plan in one short line and names failed tool calls", () => {
    const lines: string[] = [];
    const p = new AcpProjection((l) => lines.push(l));
    p.update({ sessionUpdate: "plan", entries: [{ content: "a", priority: "high", status: "completed" }, { content: "b".repeat(1000), priority: "low", status: "pending" }] });
    p.update({ sessionUpdate: "tool_call", toolCallId: "t2", title: "Run tests" });
    p.update({ sessionUpdate: "tool_call_update", toolCallId: "t2", status: "failed" });
    expect(lines[0]!.startsWith("plan 1/2: a (completed); bbb")).toBe(true);
    expect(lines[0]!.length).toBeLessThanOrEqual(400);
    expect(lines.slice(1)).toEqual(["tool: Run tests [other]", "tool failed: Run tests"]);
  });
});
