import type { RunsRepository } from "../store/runs-repository.js";

/** A transcript longer than this keeps its end: the latest turns matter most. */
const MAX_TRANSCRIPT_BYTES = 256 * 1024;

/**
 * A run's conversation as paddock stored it, for an agent that cannot load its own
 * session: each prompt, the agent's messages, and one line per tool call, in order.
 */
export function transcriptOf(runs: RunsRepository, runId: string): string {
  const parts: string[] = [];
  let agent = "";
  const flush = () => {
    if (agent.trim()) parts.push(`Agent:\n${agent.trim()}`);
    agent = "";
  };
  let cursor = 0;
  for (;;) {
    const rows = runs.eventsAfter(runId, cursor, 2000);
    if (rows.length === 0) break;
    cursor = rows[rows.length - 1]!.seq;
    for (const r of rows) {
      if (!r.payload) continue;
      let p: { content?: unknown; by?: string; updateKind?: string; update?: { content?: { text?: unknown }; title?: unknown }; replayed?: boolean };
      try {
        p = JSON.parse(r.payload) as typeof p;
      } catch {
        continue;
      }
      if (r.kind === "prompt") {
        flush();
        const text = (Array.isArray(p.content) ? p.content : []).map((b: { type?: string; text?: string }) => (b?.type === "text" ? (b.text ?? "") : "")).join("\n");
        parts.push(`User (${p.by ?? "?"}):\n${text}`);
      } else if (r.kind === "agent_update" && !p.replayed) {
        if (p.updateKind === "agent_message_chunk" && typeof p.update?.content?.text === "string") agent += p.update.content.text;
        else if (p.updateKind === "tool_call" && typeof p.update?.title === "string") agent += `\n[tool call: ${p.update.title}]\n`;
      } else if (r.kind === "turn_ended") {
        flush();
      }
    }
  }
  flush();
  const text = parts.join("\n\n");
  const bytes = Buffer.from(text, "utf8");
  return bytes.length <= MAX_TRANSCRIPT_BYTES ? text : `[…earlier turns left out]\n${bytes.subarray(bytes.length - MAX_TRANSCRIPT_BYTES).toString("utf8")}`;
}
