import { agent, ndJsonStream, RequestError, type AgentConnection } from "@agentclientprotocol/sdk";
import type { JsonObject } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { AgentKind, PermissionPolicy, RunMode, type RunEvent, type TaskRun } from "../gen/paddock/v1/task_run_pb.js";
import type { Clients } from "./client.js";

/**
 * `paddock acp`: an ACP *agent* on stdio that is a client of the daemon, so an ACP editor
 * (Zed's agent_servers) can start runs, attach to live ones, prompt them, cancel turns and
 * answer their permission requests. A session is a run: `session/new` waits for the first
 * prompt (it becomes the task and the run's first turn), `session/load` replays the run's
 * events and follows them, `session/list` lists the team's ACP runs.
 */
export interface AcpBridgeOptions {
  clients: Clients;
  /** The ACP agent new sessions run: a preset, or its argv. */
  agent: { preset: string; command: string[] };
  provider: string;
  input: Readable;
  output: Writable;
  version: string;
  log: (line: string) => void;
}

interface Session {
  /** What the editor calls it: a run id, or (new sessions) an id of ours until the first prompt. */
  id: string;
  cwd: string;
  runId: string | null;
  follow: AbortController | null;
  /** Turns waiting to end, by prompt id. */
  waiting: Map<string, { resolve: (stopReason: string) => void; reject: (e: Error) => void }>;
  /** Prompts this editor sent: not echoed back to it. */
  mine: Set<string>;
  resolved: Set<string>;
  /** Turns that ended before anyone waited for them, by prompt id. */
  ended: Map<string, string>;
}

const PROTOCOL_VERSION = 1;

export async function runAcpBridge(o: AcpBridgeOptions): Promise<void> {
  const sessions = new Map<string, Session>();

  const session = (id: string): Session => {
    const s = sessions.get(id);
    if (!s) throw RequestError.resourceNotFound(id);
    return s;
  };

  /** Relays one run event to the editor; false when it ends the follow (never, today). */
  const relay = async (s: Session, e: RunEvent, live: boolean): Promise<void> => {
    const k = e.kind;
    switch (k.case) {
      case "agentUpdate":
        await conn.client.notify("session/update", { sessionId: s.id, update: k.value.update as never });
        return;
      case "prompt":
        if (s.mine.has(k.value.promptId)) return;
        for (const block of k.value.content) {
          await conn.client.notify("session/update", { sessionId: s.id, update: { sessionUpdate: "user_message_chunk", content: block as never } });
        }
        return;
      case "permissionResolved":
        s.resolved.add(k.value.requestId);
        return;
      case "permissionRequest": {
        if (!live || s.resolved.has(k.value.requestId)) return;
        const request = k.value;
        // Asked without blocking the follow: other clients may answer first.
        void (async () => {
          const answer = (await conn.client.request("session/request_permission", {
            sessionId: s.id,
            toolCall: request.toolCall as never,
            options: request.options.map((op) => ({ optionId: op.optionId, name: op.name, kind: op.kind as never })),
          })) as { outcome: { outcome: string; optionId?: string } };
          const optionId = answer.outcome.outcome === "selected" ? (answer.outcome.optionId ?? "") : "";
          await o.clients.runs.respondPermission({ runId: s.runId!, requestId: request.requestId, optionId }).catch((error: unknown) => {
            // Another client answered first: the run goes on with its answer.
            if (ConnectError.from(error).code !== Code.FailedPrecondition) o.log(`permission answer failed: ${(error as Error).message}`);
          });
        })().catch((error: unknown) => o.log(`permission request failed: ${(error as Error).message}`));
        return;
      }
      case "turnEnded": {
        const w = s.waiting.get(k.value.promptId);
        if (w) {
          s.waiting.delete(k.value.promptId);
          w.resolve(k.value.stopReason);
        } else s.ended.set(k.value.promptId, k.value.stopReason);
        return;
      }
      default:
        return; // log lines are the readable projection of the updates above
    }
  };

  /**
   * Replays the run's events after `afterSeq` (permission requests already answered are
   * not asked again), then follows live ones until the run is final.
   */
  const attach = async (s: Session, runId: string): Promise<void> => {
    s.runId = runId;
    const replay: RunEvent[] = [];
    for await (const res of o.clients.runs.streamEvents({ runId, follow: false })) replay.push(...res.events);
    for (const e of replay) if (e.kind.case === "permissionResolved") s.resolved.add(e.kind.value.requestId);
    for (const e of replay) await relay(s, e, true);
    const last = replay.length > 0 ? replay[replay.length - 1]!.seq : 0n;
    const follow = new AbortController();
    s.follow = follow;
    void (async () => {
      try {
        for await (const res of o.clients.runs.streamEvents({ runId, follow: true, afterSeq: last }, { signal: follow.signal })) {
          for (const e of res.events) await relay(s, e, true);
        }
      } catch (error) {
        if (!follow.signal.aborted) o.log(`following run ${runId} failed: ${(error as Error).message}`);
      }
      const { run } = await o.clients.runs.getRun({ runId }).catch(() => ({ run: undefined }));
      for (const w of s.waiting.values()) w.reject(new Error(`run ${runId} ended (${run ? describe(run) : "gone"})`));
      s.waiting.clear();
    })();
  };

  const waitTurn = (s: Session, promptId: string) => {
    const ended = s.ended.get(promptId);
    if (ended !== undefined) return Promise.resolve(ended);
    return new Promise<string>((resolve, reject) => s.waiting.set(promptId, { resolve, reject }));
  };
  const newSession = (id: string, cwd: string): Session => ({ id, cwd, runId: null, follow: null, waiting: new Map(), mine: new Set(), resolved: new Set(), ended: new Map() });

  const app = agent({ name: "paddock" })
    .onRequest("initialize", ({ params }) => ({
      protocolVersion: Math.min(params.protocolVersion, PROTOCOL_VERSION),
      agentCapabilities: { loadSession: true, sessionCapabilities: { list: {} } },
      authMethods: [],
      agentInfo: { name: "paddock", version: o.version },
    }))
    .onRequest("session/new", ({ params }) => {
      const id = `new_${randomUUID()}`;
      sessions.set(id, newSession(id, params.cwd));
      return { sessionId: id };
    })
    .onRequest("session/list", async () => {
      const { runs } = await o.clients.runs.listRuns({ pageSize: 100 });
      const acp = runs.filter((r) => r.agentKind === AgentKind.ACP);
      const tasks = new Map<string, { title: string; repository: string }>();
      for (const r of acp) {
        if (!tasks.has(r.taskId)) {
          const { task } = await o.clients.tasks.getTask({ taskId: r.taskId });
          tasks.set(r.taskId, { title: task?.title ?? "", repository: task?.repository ?? "" });
        }
      }
      return {
        sessions: acp.map((r) => ({
          sessionId: r.id,
          cwd: tasks.get(r.taskId)?.repository ?? "",
          title: `${tasks.get(r.taskId)?.title ?? r.id} (${describe(r)})`,
          updatedAt: r.updateTime ? new Date(Number(r.updateTime.seconds) * 1000).toISOString() : null,
        })),
      };
    })
    .onRequest("session/load", async ({ params }) => {
      const { run } = await o.clients.runs.getRun({ runId: params.sessionId }).catch((error: unknown) => {
        if (ConnectError.from(error).code === Code.NotFound) throw RequestError.resourceNotFound(params.sessionId);
        throw error;
      });
      const s = newSession(run!.id, params.cwd);
      sessions.get(s.id)?.follow?.abort();
      sessions.set(s.id, s);
      await attach(s, run!.id);
      return {};
    })
    .onRequest("session/prompt", async ({ params }) => {
      const s = session(params.sessionId);
      const blocks = params.prompt as unknown as JsonObject[];
      if (!s.runId) {
        // The first prompt of a new session is the task, and the run's first turn.
        const text = blocks.map((b) => (typeof b.text === "string" ? b.text : "")).join("\n").trim();
        const { task } = await o.clients.tasks.createTask({ title: (text.split("\n")[0] || "editor session").slice(0, 200), description: text, repository: s.cwd });
        const { run } = await o.clients.runs.startRun({
          taskId: task!.id,
          agent: { kind: AgentKind.ACP, preset: o.agent.preset, command: o.agent.command },
          mode: RunMode.INTERACTIVE,
          permissionPolicy: PermissionPolicy.ASK,
          provider: o.provider,
        });
        s.mine.add("task");
        const turn = waitTurn(s, "task");
        await attach(s, run!.id);
        return { stopReason: (await turn) as never };
      }
      const { promptId } = await o.clients.runs.sendPrompt({ runId: s.runId, content: blocks, idempotencyKey: randomUUID() });
      s.mine.add(promptId);
      return { stopReason: (await waitTurn(s, promptId)) as never };
    })
    .onNotification("session/cancel", async ({ params }) => {
      const s = sessions.get(params.sessionId);
      if (s?.runId) await o.clients.runs.cancelTurn({ runId: s.runId }).catch((error: unknown) => o.log(`cancel failed: ${(error as Error).message}`));
    });

  // Handlers above use it; messages (and so handlers) only come after connect returns.
  const conn: AgentConnection = app.connect(ndJsonStream(Writable.toWeb(o.output), Readable.toWeb(o.input) as ReadableStream<Uint8Array>));
  await conn.closed;
  for (const s of sessions.values()) s.follow?.abort();
}

function describe(r: TaskRun): string {
  return `${r.phase}${r.awaitingInput ? ", awaiting input" : ""}`;
}
