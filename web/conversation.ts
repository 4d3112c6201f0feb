import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { PermissionOption, RunEvent } from "../src/gen/paddock/v1/task_run_pb.js";

export type Item =
  | { type: "prompt"; seq: bigint; text: string; by: string }
  | { type: "message"; seq: bigint; text: string; thought: boolean }
  | { type: "tool"; seq: bigint; id: string; update: JsonObject }
  | { type: "plan"; seq: bigint; entries: JsonValue[] }
  | { type: "permission"; seq: bigint; requestId: string; toolCall: JsonObject; options: PermissionOption[]; resolved?: { optionId: string; by: string } }
  | { type: "turn"; seq: bigint; stopReason: string };

export const str = (v: JsonValue | undefined): string => (typeof v === "string" ? v : "");
export const textOf = (content: JsonValue | undefined): string => {
  const block = content as JsonObject | undefined;
  return block && block.type === "text" ? str(block.text) : "";
};

/** Folds the run's events into what a reader follows: prompts, messages, tool calls, plans, questions. */
export function conversation(events: RunEvent[]): Item[] {
  const items: Item[] = [];
  const tools = new Map<string, Item & { type: "tool" }>();
  const permissions = new Map<string, Item & { type: "permission" }>();
  for (const e of events) {
    const k = e.kind;
    if (k.case === "prompt") {
      items.push({ type: "prompt", seq: e.seq, text: k.value.content.map((c) => textOf(c)).join(""), by: k.value.by });
    } else if (k.case === "agentUpdate") {
      const u = k.value.update ?? {};
      const kind = k.value.updateKind;
      if (kind === "agent_message_chunk" || kind === "agent_thought_chunk") {
        const thought = kind === "agent_thought_chunk";
        const prev = items[items.length - 1];
        if (prev?.type === "message" && prev.thought === thought) prev.text += textOf(u.content);
        else items.push({ type: "message", seq: e.seq, text: textOf(u.content), thought });
      } else if (kind === "tool_call" || kind === "tool_call_update") {
        const id = str(u.toolCallId);
        const known = tools.get(id);
        if (known) known.update = { ...known.update, ...Object.fromEntries(Object.entries(u).filter(([, v]) => v !== null)) };
        else {
          const item = { type: "tool" as const, seq: e.seq, id, update: u };
          tools.set(id, item);
          items.push(item);
        }
      } else if (kind === "plan") {
        items.push({ type: "plan", seq: e.seq, entries: Array.isArray(u.entries) ? u.entries : [] });
      }
    } else if (k.case === "permissionRequest") {
      const item = { type: "permission" as const, seq: e.seq, requestId: k.value.requestId, toolCall: k.value.toolCall ?? {}, options: k.value.options };
      permissions.set(item.requestId, item);
      items.push(item);
    } else if (k.case === "permissionResolved") {
      const item = permissions.get(k.value.requestId);
      if (item) item.resolved = { optionId: k.value.optionId, by: k.value.by };
    } else if (k.case === "turnEnded") {
      items.push({ type: "turn", seq: e.seq, stopReason: k.value.stopReason });
    }
  }
  return items;
}

/** The lines between the common head and tail of two texts: enough to read an agent's edit. */
export function diffLines(oldText: string | null, newText: string): { removed: string[]; added: string[] } {
  // A final newline ends the last line; it does not start an empty one.
  const split = (t: string) => (t === "" ? [] : t.replace(/\n$/, "").split("\n"));
  const a = oldText === null ? [] : split(oldText);
  const b = split(newText);
  let head = 0;
  while (head < a.length && head < b.length && a[head] === b[head]) head++;
  let tail = 0;
  while (tail < a.length - head && tail < b.length - head && a[a.length - 1 - tail] === b[b.length - 1 - tail]) tail++;
  return { removed: a.slice(head, a.length - tail), added: b.slice(head, b.length - tail) };
}
