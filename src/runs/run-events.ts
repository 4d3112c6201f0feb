import type { Json, RunnerEvent } from "../agent/runner-protocol.js";
import type { LogLine, NewRunEvent, RunEventKind, RunEventRow } from "../store/records.js";
import type { RunsRepository } from "../store/runs-repository.js";
import { GroupCommit } from "./group-commit.js";
import type { Notifier } from "./notifier.js";

import type { AgentExit } from "../../machines/task-run.machine.js";

/** Lines per StreamLogs/StreamEvents read during replay: big enough to amortise per-message costs. */
const BATCH = 2000;
/** Bytes per replay read: with long lines, fewer rows per read (the API splits them further). */
const BATCH_BYTES = 8 * 1024 * 1024;

/** The text of ACP content blocks, for a readable line. */
function textOf(content: Json[]): string {
  return content
    .map((b) => (b && typeof b === "object" && !Array.isArray(b) && typeof b.text === "string" ? b.text : ""))
    .filter(Boolean)
    .join(" ");
}

function titleOf(toolCall: Json): string {
  if (toolCall && typeof toolCall === "object" && !Array.isArray(toolCall) && typeof toolCall.title === "string") return toolCall.title;
  return "a tool call";
}

/**
 * A runner's event as the run's stored event: its readable line (what StreamLogs shows;
 * "" for the agent's raw updates) and, for every kind but plain lines, the event as JSON.
 * Everything the sandbox sent is redacted here once more.
 */
export function toStored(e: RunnerEvent, redact: (t: string) => string): NewRunEvent {
  const json = (kind: RunEventKind, stream: string, text: string, payload: unknown): NewRunEvent => ({
    time: e.time,
    stream,
    text: redact(text),
    kind,
    payload: redact(JSON.stringify(payload)),
  });
  switch (e.kind) {
    case "log":
      return { time: e.time, stream: e.stream, text: redact(e.text) };
    case "exit": {
      const who = e.stage === "setup" ? "setup script" : "agent";
      const text = `${who} exited with code ${e.exitCode}${e.signal ? ` (${e.signal})` : ""}${e.reason ? `: ${e.reason}` : ""}`;
      return { time: e.time, stream: "system", text: redact(text) };
    }
    case "acp":
      return json("agent_update", "agent_update", "", { sessionId: e.sessionId, updateKind: e.updateKind, update: e.update, replayed: e.replayed ?? false });
    case "prompt":
      return json("prompt", "prompt", `prompt from ${e.by}: ${textOf(e.content)}`, { promptId: e.promptId, content: e.content, by: e.by });
    case "permission":
      return json(
        "permission_request",
        "permission",
        `the agent asks to ${titleOf(e.toolCall)} (request ${e.requestId}; options: ${e.options.map((o) => `${o.optionId} = ${o.name}`).join(", ")})`,
        { requestId: e.requestId, toolCall: e.toolCall, options: e.options, expiresAt: e.expiresAt },
      );
    case "permission_resolved":
      return json("permission_resolved", "permission", `request ${e.requestId}: ${e.optionId ?? "rejected"} (by ${e.by})`, { requestId: e.requestId, optionId: e.optionId, by: e.by });
    case "turn_end":
      return json("turn_ended", "turn", `turn ended: ${e.stopReason}`, { promptId: e.promptId, stopReason: e.stopReason });
    default:
      return assertNever(e);
  }
}

function assertNever(x: never): never {
  throw new Error(`unexpected runner event ${JSON.stringify(x)}`);
}

/**
 * The one home of a run's events: ingest from its runner, notes of paddock's own, and
 * replay-then-follow for readers (lines for StreamLogs, events for StreamEvents), with no
 * gap or duplicate at the hand-over.
 */
export class RunEvents {
  constructor(
    private readonly runs: RunsRepository,
    private readonly notifier: Notifier,
    /** The run's phase now (flushes pending transitions first). */
    private readonly phaseOf: (id: string) => string,
    /** Told of every ingested batch, for metrics. */
    private readonly ingested: (id: string, events: readonly RunnerEvent[]) => void = () => {},
    /** Where paddock's own lines wait for the end of the turn (the run manager's, with its transitions). */
    private readonly commit = new GroupCommit(runs, notifier),
  ) {}

  /** Stores a batch of the runner's events; returns the agent's exit among them. */
  ingest(id: string, events: RunnerEvent[], redact: (t: string) => string): AgentExit | null {
    let exit: AgentExit | null = null;
    const rows = events.map((e) => {
      if (e.kind === "exit") exit = { exitCode: e.exitCode, stage: e.stage };
      return toStored(e, redact);
    });
    // With the lines still pending before them, so seqs keep the order things happened in.
    this.commit.flush(() => this.runs.appendLogs(id, rows, events[events.length - 1]!.seq));
    this.notifier.notify(`logs:${id}`);
    this.ingested(id, events);
    return exit;
  }

  /** A note from paddock itself in the run's log, stored with the turn's group commit. */
  system(id: string, ...texts: string[]): void {
    const time = Date.now();
    this.commit.log(id, texts.map((text) => ({ time, stream: "system", text })));
  }

  /** Stored lines after afterSeq in batches, then (follow) live ones until the run is cleaned. */
  logs(id: string, afterSeq: number, follow: boolean, signal: AbortSignal): AsyncGenerator<LogLine[]> {
    return this.follow(id, afterSeq, follow, signal, (cursor, limit) => this.runs.logsAfter(id, cursor, limit));
  }

  /** The same for every kind of event (or those in `kinds`). */
  events(id: string, afterSeq: number, follow: boolean, kinds: ReadonlySet<RunEventKind>, signal: AbortSignal): AsyncGenerator<RunEventRow[]> {
    // Filtering happens after the read, so the cursor moves over what the filter drops.
    return this.follow(id, afterSeq, follow, signal, (cursor, limit) => {
      const rows = this.runs.eventsAfter(id, cursor, limit);
      const kept = kinds.size > 0 ? rows.filter((r) => kinds.has(r.kind)) : rows;
      return Object.assign(kept, { last: rows.length > 0 ? rows[rows.length - 1]!.seq : null });
    });
  }

  private async *follow<T extends LogLine>(
    id: string,
    afterSeq: number,
    follow: boolean,
    signal: AbortSignal,
    read: (cursor: number, limit: number) => T[] & { last?: number | null },
  ): AsyncGenerator<T[]> {
    const sub = this.notifier.subscribe([`logs:${id}`, `run:${id}`]);
    let cursor = afterSeq;
    let limit = BATCH;
    try {
      while (!signal.aborted) {
        sub.arm();
        this.commit.flush(); // lines of this turn first
        const batch = read(cursor, limit);
        const last = batch.last ?? (batch.length > 0 ? batch[batch.length - 1]!.seq : null);
        if (last !== null) {
          cursor = last;
          let bytes = 0;
          for (const l of batch) bytes += l.text.length + ((l as Partial<RunEventRow>).payload?.length ?? 0);
          // Aim each read at about BATCH_BYTES: a log of long lines reads fewer at a time.
          limit = Math.max(1, Math.min(BATCH, Math.floor((BATCH_BYTES / Math.max(1, bytes)) * batch.length)));
          if (batch.length > 0) yield batch;
          continue;
        }
        if (!follow) return;
        // Lines are stored before the transition to cleaned, so cleaned + empty read = the end.
        if (this.phaseOf(id) === "cleaned") {
          const probe = read(cursor, 1);
          if ((probe.last ?? probe[0]?.seq ?? null) === null) return;
          continue;
        }
        await sub.wait(signal);
      }
    } finally {
      sub.close();
    }
  }
}
