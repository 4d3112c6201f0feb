import type { JsonObject } from "@bufbuild/protobuf";
import { useEffect, useRef, useState } from "preact/hooks";
import { Code, ConnectError } from "@connectrpc/connect";
import { errorText, isAbort, type Clients } from "./api.js";
import { durationMs, isFinal, millis, seconds, time } from "./format.js";
import { Action, ErrorLine, Section, Status } from "./ui.js";
import { conversation, diffLines, str, textOf, type Item } from "./conversation.js";
import { AgentKind, PermissionPolicy, RunMode, RunStatus, type LogEntry, type RunEvent, type TaskRun } from "../src/gen/paddock/v1/task_run_pb.js";

/**
 * Calls `follow(afterSeq, signal)` again after a stream breaks (daemon restarted, network
 * blip), from the last seq it saw, backing off to 10 s; stops when it ends by itself.
 */
function useFollow(key: string, follow: (signal: AbortSignal, live: () => void) => Promise<void>, enabled = true): unknown {
  const [error, setError] = useState<unknown>();
  useEffect(() => {
    if (!enabled) return;
    const abort = new AbortController();
    void (async () => {
      for (let delay = 500; !abort.signal.aborted; delay = Math.min(delay * 2, 10_000)) {
        try {
          // A stream that stays open is back (an idle one sends nothing); data proves it too.
          const settled = setTimeout(() => setError(undefined), 2000);
          try {
            await follow(abort.signal, () => setError(undefined));
          } finally {
            clearTimeout(settled);
          }
          setError(undefined);
          return;
        } catch (e) {
          if (abort.signal.aborted || isAbort(e)) return;
          setError(new ConnectError(`reconnecting… (${errorText(e)})`, Code.Unavailable));
          await new Promise((r) => setTimeout(r, delay));
        }
      }
    })();
    return () => abort.abort();
  }, [key, enabled]);
  return error;
}

function useRun(api: Clients, runId: string): { run: TaskRun | undefined; error: unknown } {
  const [run, setRun] = useState<TaskRun>();
  const error = useFollow(runId, async (signal, live) => {
    for await (const res of api.runs.watchRun({ runId }, { signal })) {
      live();
      setRun(res.run);
    }
  });
  return { run, error };
}

function useEvents(api: Clients, runId: string, enabled: boolean): { events: RunEvent[]; error: unknown } {
  const [events, setEvents] = useState<RunEvent[]>([]);
  const last = useRef(0n);
  const error = useFollow(runId, async (signal, live) => {
    for await (const res of api.runs.streamEvents({ runId, afterSeq: last.current, follow: true }, { signal })) {
      live();
      const fresh = res.events.filter((e) => e.seq > last.current);
      if (fresh.length === 0) continue;
      last.current = fresh[fresh.length - 1]!.seq;
      setEvents((old) => [...old, ...fresh]);
    }
  }, enabled);
  return { events, error };
}

interface Line {
  seq: bigint;
  stream: string;
  text: string;
}
const MAX_LINES = 5000;

function useLogs(api: Clients, runId: string, enabled: boolean): { lines: Line[]; dropped: number; error: unknown } {
  const [state, setState] = useState<{ lines: Line[]; dropped: number }>({ lines: [], dropped: 0 });
  const last = useRef(0n);
  const partial = useRef<LogEntry | null>(null);
  const error = useFollow(runId, async (signal, live) => {
    partial.current = null;
    for await (const res of api.runs.streamLogs({ runId, afterSeq: last.current, follow: true }, { signal })) {
      live();
      const add: Line[] = [];
      for (const e of res.entries) {
        // A line too large for one message comes in pieces with the same seq.
        const text: string = partial.current ? partial.current.text + e.text : e.text;
        if (e.continued) {
          partial.current = { ...e, text };
          continue;
        }
        partial.current = null;
        last.current = e.seq;
        add.push({ seq: e.seq, stream: e.stream, text });
      }
      if (add.length === 0) continue;
      setState((old) => {
        const lines = [...old.lines, ...add];
        const cut = Math.max(0, lines.length - MAX_LINES);
        return { lines: cut ? lines.slice(cut) : lines, dropped: old.dropped + cut };
      });
    }
  }, enabled);
  return { ...state, error };
}

/**
 * At most two streams at a time per run page (status, and the conversation or the log):
 * over HTTP/1.1 a browser opens only six connections to one origin, and a unary call
 * (a prompt, an answer) waits behind open streams. An ACP run's log follows only while
 * its section is open; a command run has no conversation to follow.
 */
export function RunPage({ api, runId }: { api: Clients; runId: string }) {
  const { run, error } = useRun(api, runId);
  const acp = run?.agentKind === AgentKind.ACP;
  const [logsOpen, setLogsOpen] = useState<boolean>();
  const showLogs = logsOpen ?? (!!run && !acp);
  const { events, error: eventsError } = useEvents(api, runId, acp);
  const logs = useLogs(api, runId, showLogs);
  return (
    <>
      <ErrorLine error={error} />
      {run && <RunSummary api={api} run={run} />}
      {run && run.phaseTimings.length > 0 && <PhaseTimings run={run} />}
      {acp && (
        <Section title="Conversation">
          <ErrorLine error={eventsError} />
          <Conversation api={api} runId={runId} events={events} live={!isFinal(run)} />
          {!isFinal(run) && <PromptBox api={api} run={run} />}
        </Section>
      )}
      <details open={showLogs} onToggle={(e) => setLogsOpen(e.currentTarget.open)}>
        <summary>
          <h2>Logs</h2>
        </summary>
        <ErrorLine error={logs.error} />
        <Logs lines={logs.lines} dropped={logs.dropped} />
      </details>
    </>
  );
}

function RunSummary({ api, run }: { api: Clients; run: TaskRun }) {
  const final = isFinal(run);
  const acp = run.agentKind === AgentKind.ACP;
  return (
    <Section
      title={`Run ${run.id}`}
      actions={
        <>
          {acp && !final && <Action label="Stop turn" action={() => api.runs.cancelTurn({ runId: run.id })} disabled={run.awaitingInput} />}
          {!final && <Action label="Complete" action={() => api.runs.completeRun({ runId: run.id, status: RunStatus.COMPLETED })} testid="complete" />}
          {!final && <Action label="Cancel run" class="danger" action={() => api.runs.cancelRun({ runId: run.id })} testid="cancel" />}
        </>
      }
    >
      <dl data-testid="run-summary">
        <dt>Status</dt>
        <dd data-testid="run-status">
          <Status status={run.status} phase={run.phase} />
          {run.awaitingInput && <span class="badge">awaiting input</span>}
        </dd>
        <dt>Task</dt>
        <dd>
          <a href={`#/tasks/${run.taskId}`}>{run.taskId}</a> (run #{String(run.runNumber)})
        </dd>
        <dt>Agent</dt>
        <dd>
          {acp ? `ACP · ${RunMode[run.mode]?.toLowerCase()} · permissions: ${PermissionPolicy[run.permissionPolicy]?.toLowerCase().replace("_", " ")}` : "command"}
          {run.agentCommand.length > 0 && <code> {run.agentCommand.join(" ")}</code>}
        </dd>
        <dt>Sandbox</dt>
        <dd>
          {run.provider}
          {run.image && ` · ${run.image}`}
          {!run.networkPolicyEnforced && <span class="badge warn">network policy not enforced</span>}
          {!run.agentIsolated && <span class="badge warn">agent not isolated</span>}
        </dd>
        <dt>Branch</dt>
        <dd>
          {run.branch || "default"} → {run.resultBranch}
          {run.resultCommit && <code> {run.resultCommit.slice(0, 12)}</code>}
        </dd>
        <dt>Times</dt>
        <dd>
          created {time(run.createTime)}
          {run.startTime && `, started ${time(run.startTime)}`}
          {run.finishTime && `, finished ${time(run.finishTime)}`}
          {run.cleanedAt ? `, cleaned ${time(run.cleanedAt)}` : !final && run.deadline ? `, deadline ${time(run.deadline)}` : ""}
        </dd>
        {run.exitCode !== undefined && (
          <>
            <dt>Exit code</dt>
            <dd>{run.exitCode}</dd>
          </>
        )}
        {run.errorMessage && (
          <>
            <dt>Error</dt>
            <dd class="error">{run.errorMessage}</dd>
          </>
        )}
      </dl>
    </Section>
  );
}

/** Ticks every second while something is under way, so running durations move. */
function useNow(active: boolean): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!active) return;
    const id = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(id);
  }, [active]);
  return now;
}

function PhaseTimings({ run }: { run: TaskRun }) {
  const now = useNow(run.phaseTimings.some((p) => !p.duration));
  const total = run.phaseTimings.reduce((sum, p) => sum + (p.duration ? durationMs(p.duration) : now - millis(p.startTime)), 0) || 1;
  return (
    <Section title="Phases">
      <table class="phases" data-testid="phase-timings">
        <tbody>
          {run.phaseTimings.map((p) => {
            const ms = p.duration ? durationMs(p.duration) : Math.max(0, now - millis(p.startTime));
            return (
              <tr key={p.phase}>
                <td>{p.phase}</td>
                <td>{time(p.startTime)}</td>
                <td class="num">{seconds(ms)}{p.duration ? "" : " …"}</td>
                <td class="bar">
                  <meter min={0} max={total} value={ms} />
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </Section>
  );
}

function Conversation({ api, runId, events, live }: { api: Clients; runId: string; events: RunEvent[]; live: boolean }) {
  const items = conversation(events);
  if (items.length === 0) return <p class="muted">{live ? "Waiting for the agent…" : "No conversation."}</p>;
  return (
    <ol class="conversation" data-testid="conversation">
      {items.map((item) => {
        const key = String(item.seq);
        switch (item.type) {
          case "prompt":
            return (
              <li key={key} class="prompt" data-testid="prompt">
                <span class="who">{item.by === "task" ? "task prompt" : `prompt from ${item.by}`}</span>
                <pre>{item.text}</pre>
              </li>
            );
          case "message":
            return (
              <li key={key} class={item.thought ? "thought" : "message"} data-testid="agent-message">
                <pre>{item.text}</pre>
              </li>
            );
          case "tool":
            return <ToolCall key={key} update={item.update} />;
          case "plan":
            return (
              <li key={key} class="plan" data-testid="plan">
                <span class="who">plan</span>
                <ul>
                  {item.entries.map((entry) => {
                    const o = entry as JsonObject;
                    return <li class={`plan-${str(o.status)}`}>{`${str(o.status) === "completed" ? "✓" : str(o.status) === "in_progress" ? "▸" : "·"} ${str(o.content)}`}</li>;
                  })}
                </ul>
              </li>
            );
          case "permission":
            return <Permission key={key} api={api} runId={runId} item={item} />;
          case "turn":
            return (
              <li key={key} class="turn" data-testid="turn-ended">
                turn ended: {item.stopReason}
              </li>
            );
        }
      })}
    </ol>
  );
}

function ToolCall({ update }: { update: JsonObject }) {
  const content = Array.isArray(update.content) ? (update.content as JsonObject[]) : [];
  return (
    <li class="tool" data-testid="tool-call">
      <span class="who">
        tool · {str(update.kind) || "call"} · <span class={`tool-${str(update.status)}`}>{str(update.status) || "pending"}</span>
      </span>
      <strong>{str(update.title)}</strong>
      {content.map((c) =>
        c.type === "diff" ? (
          <Diff path={str(c.path)} oldText={typeof c.oldText === "string" ? c.oldText : null} newText={str(c.newText)} />
        ) : c.type === "content" ? (
          <pre>{textOf(c.content)}</pre>
        ) : null,
      )}
    </li>
  );
}

/** The changed lines of an agent's edit (see diffLines). */
function Diff({ path, oldText, newText }: { path: string; oldText: string | null; newText: string }) {
  const { removed, added } = diffLines(oldText, newText);
  return (
    <div class="diff" data-testid="diff">
      <div class="path">{path}</div>
      <pre>
        {removed.map((l) => (
          <div class="del">-{l}</div>
        ))}
        {added.map((l) => (
          <div class="add">+{l}</div>
        ))}
      </pre>
    </div>
  );
}

function Permission({ api, runId, item }: { api: Clients; runId: string; item: Item & { type: "permission" } }) {
  const answer = (optionId: string) => () => api.runs.respondPermission({ runId, requestId: item.requestId, optionId });
  const chosen = item.resolved && (item.options.find((o) => o.optionId === item.resolved!.optionId)?.name ?? "rejected");
  return (
    <li class="permission" data-testid="permission-request" data-resolved={item.resolved ? "yes" : "no"}>
      <span class="who">permission request</span>
      <strong>{str(item.toolCall.title) || "The agent asks to use a tool"}</strong>
      {item.resolved ? (
        <p>
          Answered: <strong>{chosen}</strong> by {item.resolved.by}
        </p>
      ) : (
        <div class="row">
          {item.options.map((o) => (
            <Action label={o.name} class={o.kind.startsWith("reject") ? "danger" : ""} action={answer(o.optionId)} />
          ))}
          {!item.options.some((o) => o.kind.startsWith("reject")) && <Action label="Reject" class="danger" action={answer("")} />}
        </div>
      )}
    </li>
  );
}

function PromptBox({ api, run }: { api: Clients; run: TaskRun }) {
  const [text, setText] = useState("");
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const submit = (e: Event) => {
    e.preventDefault();
    setBusy(true);
    api.runs.sendPrompt({ runId: run.id, text, idempotencyKey: crypto.randomUUID() }).then(
      () => (setBusy(false), setText(""), setError(undefined)),
      (err: unknown) => (setBusy(false), setError(err)),
    );
  };
  return (
    <form class="prompt-box" onSubmit={submit} data-testid="prompt-box">
      <textarea name="prompt" rows={3} placeholder={run.mode === RunMode.INTERACTIVE ? "Follow-up prompt" : "Follow-ups need an interactive run"} value={text} onInput={(e) => setText(e.currentTarget.value)} required />
      <button type="submit" disabled={busy || !text.trim()}>
        Send{run.awaitingInput ? "" : " (after this turn)"}
      </button>
      <ErrorLine error={error} />
    </form>
  );
}

function Logs({ lines, dropped }: { lines: Line[]; dropped: number }) {
  const box = useRef<HTMLPreElement>(null);
  const pinned = useRef(true);
  // Stay at the bottom while the reader is there; leave them be when they scroll up.
  useEffect(() => {
    const el = box.current;
    if (el && pinned.current) el.scrollTop = el.scrollHeight;
  }, [lines]);
  const onScroll = () => {
    const el = box.current!;
    pinned.current = el.scrollHeight - el.scrollTop - el.clientHeight < 20;
  };
  return (
    <>
      {dropped > 0 && <p class="muted">{dropped} older lines are not shown (paddock logs has them all).</p>}
      <pre class="logs" ref={box} onScroll={onScroll} data-testid="logs">
        {lines.map((l) => (
          <div key={String(l.seq)} class={`log-${l.stream}`}>
            <span class="stream">{l.stream}</span>
            {l.text}
          </div>
        ))}
      </pre>
    </>
  );
}
