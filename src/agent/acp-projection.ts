import type { Json } from "./runner-protocol.js";

/** A partial line of message text is written out at this size, newline or not. */
const MAX_PENDING_CHARS = 4096;
/** …or once the agent has sent no text for this long. */
const IDLE_FLUSH_MS = 200;
/** A plan's line is cut here: it is a summary; the whole plan is in the event. */
const MAX_PLAN_CHARS = 400;
/** Titles remembered per tool call, for the line saying how it ended. */
const MAX_TITLES = 1000;

type Obj = { [key: string]: Json };
const obj = (v: Json | undefined): Obj | null => (v !== null && typeof v === "object" && !Array.isArray(v) ? v : null);
const str = (v: Json | undefined): string | null => (typeof v === "string" ? v : null);

/**
 * The readable projection of an ACP agent's session updates (the "agent" log stream):
 * message chunks coalesced into lines, one line per tool call and per tool call that
 * completes or fails, a plan as one short line. Everything else stays in the events only.
 */
export class AcpProjection {
  private pending = "";
  private timer: NodeJS.Timeout | null = null;
  private readonly titles = new Map<string, string>();

  constructor(private readonly emit: (line: string) => void) {}

  update(update: Json): void {
    const u = obj(update);
    if (!u) return;
    switch (u.sessionUpdate) {
      case "agent_message_chunk": {
        const content = obj(u.content);
        const text = content?.type === "text" ? str(content.text) : null;
        if (text !== null) this.text(text);
        return;
      }
      case "tool_call": {
        const id = str(u.toolCallId) ?? "";
        const title = str(u.title) || id || "tool call";
        this.remember(id, title);
        this.line(`tool: ${title} [${str(u.kind) ?? "other"}]`);
        return;
      }
      case "tool_call_update": {
        const status = str(u.status);
        if (status !== "completed" && status !== "failed") return;
        const id = str(u.toolCallId) ?? "";
        const title = str(u.title) || this.titles.get(id) || id || "tool call";
        this.titles.delete(id);
        this.line(`tool ${status}: ${title}`);
        return;
      }
      case "plan": {
        const entries = Array.isArray(u.entries) ? u.entries.map(obj).filter((e): e is Obj => e !== null) : [];
        const done = entries.filter((e) => e.status === "completed").length;
        const text = entries.map((e) => `${str(e.content) ?? ""} (${str(e.status) ?? "pending"})`).join("; ");
        const line = `plan ${done}/${entries.length}: ${text}`;
        this.line(line.length > MAX_PLAN_CHARS ? line.slice(0, MAX_PLAN_CHARS - 1) + "…" : line);
        return;
      }
    }
  }

  /** Writes out a partial line of message text (at a turn's end, before other lines). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!this.pending) return;
    const text = this.pending;
    this.pending = "";
    this.emit(text);
  }

  private line(text: string): void {
    this.flush();
    this.emit(text);
  }

  private text(chunk: string): void {
    this.pending += chunk;
    let nl: number;
    while ((nl = this.pending.indexOf("\n")) >= 0) {
      const line = this.pending.slice(0, nl);
      this.pending = this.pending.slice(nl + 1);
      this.emit(line.endsWith("\r") ? line.slice(0, -1) : line);
    }
    while (this.pending.length >= MAX_PENDING_CHARS) {
      this.emit(this.pending.slice(0, MAX_PENDING_CHARS));
      this.pending = this.pending.slice(MAX_PENDING_CHARS);
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = this.pending ? setTimeout(() => this.flush(), IDLE_FLUSH_MS) : null;
  }

  private remember(id: string, title: string): void {
    if (this.titles.size >= MAX_TITLES) this.titles.delete(this.titles.keys().next().value!);
    this.titles.set(id, title);
  }
}
