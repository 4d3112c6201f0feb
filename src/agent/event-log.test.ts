import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { EventLog } from "./event-log.js";
import { MAX_EVENTS_PER_RESPONSE } from "./runner-protocol.js";

const dirs: string[] = [];
function file(): string {
  const dir = mkdtempSync(join(tmpdir(), "paddock-events-"));
  dirs.push(dir);
  return join(dir, "events.jsonl");
}
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

function readAll(log: EventLog): string[] {
  const texts: string[] = [];
  for (let after = 0; ; ) {
    const batch = log.after(after);
    if (batch.length === 0) return texts;
    for (const e of batch) if (e.kind === "log") texts.push(e.text);
    after = batch[batch.length - 1]!.seq;
  }
}

describe("EventLog", () => {
  it("numbers events gaplessly and serves any range, old ones from the file", () => {
    const path = file();
    const log = new EventLog(path);
    for (let i = 1; i <= 5000; i++) log.append({ kind: "log", stream: "stdout", text: `line ${i}` });
    log.flush();
    const texts = readAll(log);
    expect(texts).toHaveLength(5000);
    expect(texts[0]).toBe("line 1");
    expect(texts[4999]).toBe("line 5000");
    expect(log.after(1234)[0]).toMatchObject({ seq: 1235, text: "line 1235" });
    expect(log.after(0).length).toBeLessThanOrEqual(MAX_EVENTS_PER_RESPONSE);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    log.close();
  });

  it("answers in bounded pieces when lines are long", () => {
    const log = new EventLog(file());
    const big = "y".repeat(512 * 1024);
    for (let i = 0; i < 40; i++) log.append({ kind: "log", stream: "stdout", text: big });
    const first = log.after(0);
    expect(first.length).toBeGreaterThan(0);
    expect(first.length).toBeLessThan(40);
    expect(readAll(log)).toHaveLength(40);
    log.close();
  });

  it("a restarted runner finds every event and the exit, and a line cut by a crash does not eat the next", () => {
    const path = file();
    const log = new EventLog(path);
    for (let i = 1; i <= 700; i++) log.append({ kind: "log", stream: "stdout", text: `l${i}` });
    log.append({ kind: "exit", exitCode: 3, signal: null, stage: "agent" });
    log.close();
    appendFileSync(path, '{"seq":702,"time":1,"kind":"log","stream":"stdout","te'); // killed mid-write
    const again = new EventLog(path);
    expect(again.lastSeq).toBe(701);
    expect(again.lastExit).toMatchObject({ exitCode: 3 });
    again.append({ kind: "log", stream: "stdout", text: "after restart" });
    again.flush();
    expect(readAll(again).slice(-2)).toEqual(["l700", "after restart"]);
    expect(readFileSync(path, "utf8").split("\n").filter(Boolean).slice(-1)[0]).toContain('"seq":702');
    again.close();
  });
});
