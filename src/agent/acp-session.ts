import { client, ndJsonStream, RequestError, type AnyMessage, type ClientConnection, type ContentBlock } from "@agentclientprotocol/sdk";
import type { ChildProcess } from "node:child_process";
import { Readable, Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import type { AgentUser } from "./agent-user.js";
import { AcpProjection } from "./acp-projection.js";
import { PermissionBroker, type PermissionAnswer, type PermissionOutcome } from "./acp-permissions.js";
import type { NewEvent } from "./event-log.js";
import type { Json, PermissionOptionInfo, PermissionPolicy, PermissionResponse, PromptRequest, RunMode } from "./runner-protocol.js";
import { WorkspaceFileError, WorkspaceFiles } from "./workspace-files.js";

/** The ACP protocol version the runner speaks (the SDK's stable v1). */
const PROTOCOL_VERSION = 1;
/** After a background run's turn, how long the agent may take to exit once its stdin closes. */
const CLOSE_WAIT_MS = 5_000;
/** Bounds on what a client may queue. */
const MAX_ID_CHARS = 200;
const MAX_BLOCKS = 1000;

export interface AcpSessionOptions {
  workspace: string;
  user: AgentUser;
  mode: RunMode;
  policy: PermissionPolicy;
  permissionTimeoutMs: number;
  graceMs: number;
  /** Records an event that is always kept (prompts, permissions, turn ends). */
  append: (e: NewEvent) => { seq: number };
  /** Records a session update, within the run's log budget. */
  update: (e: Extract<NewEvent, { kind: "acp" }>) => void;
  /** Records a readable line on stream "agent" (redacted and budgeted by the caller). */
  line: (text: string) => void;
  /** The run's redactor, as it is now (it is set at POST /start). */
  redact: (text: string) => string;
  /** Back-pressure: a promise while events wait to be written. */
  ready: () => Promise<void> | null;
  /** A run from a handoff: the session to take back with session/load (null: a new session). */
  resume?: { sessionId: string } | null;
  /** Records a line on stream "handoff" (how the conversation was taken back). */
  handoffLine?: (text: string) => void;
}

/** How an ACP agent's run ended, for the exit event. */
export interface AcpExit {
  exitCode: number;
  signal: string | null;
  reason?: string;
}

export interface AcpHealth {
  turn: "starting" | "working" | "idle";
  pendingPermissions: number;
  queuedPrompts: number;
}

/** A request the runner refuses: the status and message its HTTP answer carries. */
export class RunnerRequestError extends Error {
  override name = "RunnerRequestError";
  constructor(
    readonly status: 400 | 404 | 409,
    message: string,
  ) {
    super(message);
  }
}

type Obj = { [key: string]: Json };
const isObj = (v: unknown): v is Obj => v !== null && typeof v === "object" && !Array.isArray(v);
const rpcKey = (id: unknown) => JSON.stringify(id ?? null);

/**
 * The runner as the ACP client of one agent process: initialize, session/new in the
 * workspace, then one session/prompt per queued prompt (the task's first). Every message
 * the agent sends is seen in wire order by a tap before the SDK handles it, so updates,
 * permission requests and turn ends are numbered in the order they happened.
 */
export class AcpSession {
  private readonly queue: PromptRequest[] = [];
  private readonly promptSeqs = new Map<string, number>();
  private wake: (() => void) | null = null;
  private current: PromptRequest | null = null;
  private turnCancelled = false;
  private turnEnded: (() => void) | null = null;
  private sessionId: string | null = null;
  private stopping = false;
  private conn: ClientConnection | null = null;
  private child: ChildProcess | null = null;
  private readonly permissions: PermissionBroker;
  private readonly projection: AcpProjection;
  private readonly files: WorkspaceFiles;
  private readonly decisions = new Map<string, Promise<PermissionOutcome>>();
  /** While session/load replays history: updates are marked replayed. */
  private loading = false;
  private transcript: { runId: string; text: string } | null = null;

  constructor(private readonly o: AcpSessionOptions) {
    this.permissions = new PermissionBroker(o.policy, o.permissionTimeoutMs, o.append);
    this.projection = new AcpProjection(o.line);
    this.files = new WorkspaceFiles(o.workspace, o.user);
  }

  health(): AcpHealth {
    return {
      turn: this.sessionId === null ? "starting" : this.current ? "working" : "idle",
      pendingPermissions: this.permissions.pending,
      queuedPrompts: this.queue.length,
    };
  }

  /** The ACP session, once it exists. */
  get currentSessionId(): string {
    return this.sessionId ?? "";
  }

  /** A handoff's earlier conversation, for an agent that cannot load its session. */
  giveTranscript(t: { runId: string; text: string }): void {
    this.transcript = t;
  }

  /** The task, the session's first prompt. */
  promptTask(text: string): void {
    this.enqueue({ promptId: "task", content: [{ type: "text", text }], by: "task" });
  }

  /** POST /prompt: queues a follow-up turn; the same promptId again is answered, not queued twice. */
  prompt(body: unknown): { seq: number; duplicate: boolean } {
    const req = parsePrompt(body);
    const seen = this.promptSeqs.get(req.promptId);
    if (seen !== undefined) return { seq: seen, duplicate: true };
    if (this.o.mode !== "interactive") throw new RunnerRequestError(409, "the run is in background mode: it ends with its first turn");
    if (this.stopping) throw new RunnerRequestError(409, "the agent is stopping");
    return { seq: this.enqueue(req), duplicate: false };
  }

  /** POST /permission: the first answer to a parked request wins. */
  respond(body: unknown): void {
    const answer: PermissionAnswer = this.permissions.answer(parsePermission(body));
    if (answer === "unknown") throw new RunnerRequestError(404, "requestId: no such permission request");
    if (answer === "resolved") throw new RunnerRequestError(409, "requestId: the permission request was already resolved");
    if (answer === "bad_option") throw new RunnerRequestError(400, "optionId: not one of the request's options");
  }

  /** POST /cancel-turn: session/cancel for the running turn; false when none runs. */
  cancelTurn(): boolean {
    if (!this.current || !this.conn || this.sessionId === null) return false;
    this.turnCancelled = true;
    void this.conn.agent.notify("session/cancel", { sessionId: this.sessionId }).catch(() => undefined);
    // ACP: a client that cancels a turn answers its pending permission requests "cancelled".
    this.permissions.cancelAll("cancel");
    return true;
  }

  /**
   * Before the agent is stopped: no further turn starts, the running one is cancelled and
   * given up to `waitMs` to end, and the agent's stdin is closed so it may exit on its own.
   */
  async interrupt(waitMs: number): Promise<void> {
    this.stopping = true;
    this.wake?.();
    if (this.current && this.cancelTurn()) {
      const ended = new Promise<void>((r) => (this.turnEnded = r));
      await Promise.race([ended, sleep(waitMs), this.conn?.closed]);
    }
    this.conn?.close();
    this.child?.stdin?.end();
  }

  /**
   * Drives the agent process to its end and says how the run ended: background, the first
   * turn's stopReason; interactive, turns until the agent is stopped; a crash, where it
   * happened. `exited` resolves when the process has; `stop` ends it (SIGTERM, grace, kill).
   */
  async run(child: ChildProcess, exited: Promise<{ exitCode: number; signal: string | null }>, stop: () => Promise<void>): Promise<AcpExit> {
    if (!child.stdin || !child.stdout || child.pid === undefined) return exited;
    this.child = child;
    child.stdin.on("error", () => undefined); // an agent that died mid-write: its exit says so
    const raw = ndJsonStream(Writable.toWeb(child.stdin) as WritableStream<Uint8Array>, Readable.toWeb(child.stdout) as ReadableStream<Uint8Array>);
    const tap = new TransformStream<AnyMessage, AnyMessage>({
      transform: (message, controller) => {
        this.tap(message);
        controller.enqueue(message);
        return this.o.ready() ?? undefined;
      },
    });
    this.conn = this.clientApp().connect({ writable: raw.writable, readable: raw.readable.pipeThrough(tap) });
    const closeAgent = async () => {
      this.conn?.close();
      child.stdin?.end();
      const done = await Promise.race([exited.then(() => true), sleep(Math.min(CLOSE_WAIT_MS, this.o.graceMs)).then(() => false)]);
      if (!done) await stop();
      return exited;
    };
    let phase = "initialize";
    try {
      const end = await this.drive((p) => (phase = p));
      if (!end) return await closeAgent(); // stopped: the exit is the agent's own
      await closeAgent();
      return { exitCode: end.exitCode, signal: null, ...(end.reason ? { reason: end.reason } : {}) };
    } catch (error) {
      this.projection.flush();
      this.permissions.cancelAll("cancel");
      if (error instanceof RequestError && !this.conn.signal.aborted) {
        // The agent answered with an error (no credentials, a bad prompt…): the run fails saying so.
        await closeAgent();
        return { exitCode: 1, signal: null, reason: `the agent's ${phase} failed: ${this.o.redact(error.message)}` };
      }
      const reason = this.current ? "agent crashed mid-turn" : this.sessionId === null ? "the agent exited before its ACP session started" : "the agent exited between turns";
      const ended = await Promise.race([exited, sleep(this.o.graceMs).then(() => null)]);
      const proc = ended ?? (await stop(), await exited);
      if (this.stopping) return proc;
      return { exitCode: proc.exitCode || 1, signal: proc.signal, reason };
    } finally {
      this.projection.flush();
    }
  }

  private async drive(phase: (p: string) => void): Promise<{ exitCode: number; reason?: string } | null> {
    const conn = this.conn!;
    const closed = conn.closed.then(() => {
      throw new Error("the ACP connection closed");
    });
    closed.catch(() => undefined);
    const init = await Promise.race([
      conn.agent.request("initialize", {
        protocolVersion: PROTOCOL_VERSION,
        // No fs capability offered: in a sandbox the agent's own file tools act as its own
        // user, which is the boundary already (claude-code-acp disables its Write and Edit
        // when a client offers fs). fs/* requests an agent sends anyway are still served,
        // confined to the workspace.
        clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false },
        clientInfo: { name: "paddock", version: "1" },
      }),
      closed,
    ]);
    const session = await this.openSession(init.agentCapabilities ?? {}, closed, phase);
    for (;;) {
      const next = await Promise.race([this.next(), closed]);
      if (!next) return null;
      phase("session/prompt");
      this.current = next;
      this.turnCancelled = false;
      const prompt = [...session.context.splice(0), ...next.content] as unknown as ContentBlock[];
      const { stopReason } = await Promise.race([conn.agent.request("session/prompt", { sessionId: session.sessionId, prompt }), closed]);
      this.projection.flush();
      this.permissions.cancelAll("cancel"); // none should remain once a turn has ended
      this.o.append({ kind: "turn_end", promptId: next.promptId, stopReason });
      this.current = null;
      this.turnEnded?.();
      this.turnEnded = null;
      if (this.o.mode === "background") {
        return stopReason === "end_turn" ? { exitCode: 0 } : { exitCode: 1, reason: `the turn ended with stopReason ${stopReason}` };
      }
    }
  }

  /**
   * session/new, or for a run from a handoff session/load of the carried session when the
   * agent can load; otherwise the transcript goes with the first prompt. A line on stream
   * "handoff" says which happened.
   */
  private async openSession(caps: { loadSession?: boolean; promptCapabilities?: { embeddedContext?: boolean } }, closed: Promise<never>, phase: (p: string) => void): Promise<{ sessionId: string; context: Json[] }> {
    const conn = this.conn!;
    const note = (text: string) => this.o.handoffLine?.(text);
    const resume = this.o.resume;
    if (resume && caps.loadSession) {
      phase("session/load");
      this.loading = true;
      try {
        await Promise.race([conn.agent.request("session/load", { sessionId: resume.sessionId, cwd: this.o.workspace, mcpServers: [] }), closed]);
        this.sessionId = resume.sessionId;
        note(`resume: session_load: the agent loaded session ${resume.sessionId} from its own files, rewritten for ${this.o.workspace}`);
        return { sessionId: resume.sessionId, context: [] };
      } catch (error) {
        if (!(error instanceof RequestError)) throw error;
        note(`the agent could not load session ${resume.sessionId}: ${this.o.redact(error.message)}`);
      } finally {
        this.projection.flush();
        this.loading = false;
      }
    }
    phase("session/new");
    const session = await Promise.race([conn.agent.request("session/new", { cwd: this.o.workspace, mcpServers: [] }), closed]);
    this.sessionId = session.sessionId;
    const context: Json[] = [];
    if (this.transcript) {
      const t = this.transcript;
      const text = `The conversation so far (paddock run ${t.runId}, handed off to this session):\n\n${t.text}`;
      context.push(caps.promptCapabilities?.embeddedContext ? { type: "resource", resource: { uri: `paddock://runs/${t.runId}/transcript`, mimeType: "text/markdown", text } } : { type: "text", text });
      note(`resume: transcript: ${resume && !caps.loadSession ? "the agent cannot load sessions; " : ""}the conversation of run ${t.runId} (${Buffer.byteLength(t.text)} bytes, from paddock's stored events) goes with the first prompt`);
    } else if (resume) {
      note("resume: none: the agent cannot load the session and no transcript was given");
    }
    return { sessionId: session.sessionId, context };
  }

  /** The next queued prompt, waiting for one; null once the agent is stopping. */
  private async next(): Promise<PromptRequest | null> {
    while (!this.stopping) {
      const p = this.queue.shift();
      if (p) return p;
      await new Promise<void>((r) => (this.wake = r));
      this.wake = null;
    }
    return null;
  }

  private enqueue(req: PromptRequest): number {
    const content = this.redactJson(req.content as Json) as Json[];
    const { seq } = this.o.append({ kind: "prompt", promptId: req.promptId, content, by: req.by });
    this.promptSeqs.set(req.promptId, seq);
    this.queue.push(req);
    this.wake?.();
    return seq;
  }

  /** Sees every message from the agent, in wire order, before the SDK handles it. */
  private tap(message: AnyMessage): void {
    if (!isObj(message) || typeof message.method !== "string") return;
    const params = isObj(message.params) ? message.params : {};
    if (message.method === "session/update" && !("id" in message)) {
      const update = params.update;
      if (!isObj(update) || typeof update.sessionUpdate !== "string") return;
      const redacted = this.redactJson(update);
      this.o.update({ kind: "acp", sessionId: typeof params.sessionId === "string" ? params.sessionId : "", updateKind: update.sessionUpdate, update: redacted, ...(this.loading ? { replayed: true } : {}) });
      if (!this.loading) this.projection.update(redacted); // history is not news in the log
      return;
    }
    if (message.method === "session/request_permission" && "id" in message) {
      this.projection.flush();
      const options: PermissionOptionInfo[] = (Array.isArray(params.options) ? params.options : []).filter(isObj).map((o) => ({
        optionId: String(o.optionId ?? ""),
        name: this.o.redact(String(o.name ?? "")),
        kind: String(o.kind ?? ""),
      }));
      const decision = this.permissions.open(this.redactJson(params.toolCall ?? null), options);
      this.decisions.set(rpcKey(message.id), decision);
      if (this.turnCancelled || this.stopping) this.permissions.cancelAll("cancel");
    }
  }

  private clientApp() {
    return client({ name: "paddock" })
      .onRequest("session/request_permission", async ({ requestId }) => {
        const key = rpcKey(requestId);
        const decision = this.decisions.get(key);
        this.decisions.delete(key);
        return { outcome: decision ? await decision : { outcome: "cancelled" as const } };
      })
      .onRequest("fs/read_text_file", async ({ params }) => ({ content: await this.fileOp(() => this.files.read(params.path, params.line, params.limit)) }))
      .onRequest("fs/write_text_file", async ({ params }) => {
        await this.fileOp(() => this.files.write(params.path, params.content));
        return {};
      });
  }

  /** File errors go back to the agent as ACP errors naming its own path; nothing else of the runner's. */
  private async fileOp<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (error) {
      throw new RequestError(-32602, error instanceof WorkspaceFileError ? error.message : "the file operation failed");
    }
  }

  /** The run's redactor applied to every string in a JSON value. */
  private redactJson(value: Json): Json {
    if (typeof value === "string") return this.o.redact(value);
    if (Array.isArray(value)) return value.map((v) => this.redactJson(v));
    if (isObj(value)) {
      const out: Obj = {};
      for (const [k, v] of Object.entries(value)) out[k] = this.redactJson(v);
      return out;
    }
    return value;
  }
}

function parsePrompt(body: unknown): PromptRequest {
  if (!isObj(body)) throw new RunnerRequestError(400, "the body must be a JSON object");
  const { promptId, content, by } = body;
  if (typeof promptId !== "string" || promptId.length === 0 || promptId.length > MAX_ID_CHARS) throw new RunnerRequestError(400, `promptId: must be a string of 1 to ${MAX_ID_CHARS} characters`);
  if (typeof by !== "string" || by.length === 0 || by.length > MAX_ID_CHARS) throw new RunnerRequestError(400, `by: must be a string of 1 to ${MAX_ID_CHARS} characters`);
  if (!Array.isArray(content) || content.length === 0 || content.length > MAX_BLOCKS) throw new RunnerRequestError(400, `content: must be an array of 1 to ${MAX_BLOCKS} ACP content blocks`);
  if (!content.every((b) => isObj(b) && typeof b.type === "string")) throw new RunnerRequestError(400, "content: every block must be an object with a string type");
  return { promptId, content, by };
}

function parsePermission(body: unknown): PermissionResponse {
  if (!isObj(body)) throw new RunnerRequestError(400, "the body must be a JSON object");
  const { requestId, optionId, by } = body;
  if (typeof requestId !== "string" || requestId.length === 0) throw new RunnerRequestError(400, "requestId: must be a non-empty string");
  if (optionId !== null && typeof optionId !== "string") throw new RunnerRequestError(400, "optionId: must be a string, or null to reject");
  if (typeof by !== "string" || by.length === 0 || by.length > MAX_ID_CHARS) throw new RunnerRequestError(400, `by: must be a string of 1 to ${MAX_ID_CHARS} characters`);
  return { requestId, optionId, by };
}
