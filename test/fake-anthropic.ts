import { randomBytes } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type RequestListener, type ServerResponse } from "node:http";
import { createServer as createTlsServer } from "node:https";
import type { AddressInfo } from "node:net";

/**
 * A local fake of the Anthropic Messages API, for running the real Claude Code CLI (or
 * anything built on the Anthropic SDK) against scripted answers. It streams exactly as
 * the real API does (named SSE events: message_start, content_block_start/delta/stop,
 * message_delta with stop_reason and usage, message_stop) and answers stream=false with
 * the whole message as JSON. It records every request, headers included.
 */

/** One scripted assistant turn. */
export type FakeReply =
  | { text: string }
  | { toolUse: { name: string; input: Record<string, unknown> } };

/** A reply, or one made from the request it answers (e.g. a path only the request tells). */
export type ScriptedReply = FakeReply | ((request: RecordedRequest) => FakeReply);

export interface RecordedRequest {
  method: string;
  /** Path without the query string, e.g. `/v1/messages`. */
  path: string;
  query: string;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body, or undefined when there was none. */
  body: unknown;
}

export interface FakeAnthropic {
  /** Base URL for ANTHROPIC_BASE_URL, with the host the client should dial. */
  url(host?: string): string;
  readonly port: number;
  /** Every request in arrival order. */
  readonly requests: readonly RecordedRequest[];
  /** The POST /v1/messages requests that took a scripted reply, in order. */
  readonly scripted: readonly RecordedRequest[];
  /** Scripted replies not yet taken. */
  pending(): number;
  close(): Promise<void>;
}

export interface FakeAnthropicOptions {
  /** Address to listen on: loopback, or a Docker network's gateway for containers. */
  host?: string;
  /**
   * Answers for the agent's main loop, in order: requests that offer tools. Claude Code
   * also sends side requests without tools (titles, topic checks, quota probes); those get
   * `sideReply` so they do not eat the script. When the script runs out, the main loop
   * gets `sideReply` too.
   */
  replies: ScriptedReply[];
  sideReply?: string;
  /** Serve HTTPS with this certificate (e.g. one a test CA issued for a made-up name). */
  tls?: { key: string; cert: string };
}

const MODELS = ["claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "claude-haiku-4-5-20251001"];

export async function startFakeAnthropic(options: FakeAnthropicOptions): Promise<FakeAnthropic> {
  const queue = [...options.replies];
  const sideReply: FakeReply = { text: options.sideReply ?? "ok" };
  const requests: RecordedRequest[] = [];
  const scripted: RecordedRequest[] = [];

  const handler: RequestListener = (req, res) => {
    void readBody(req).then((raw) => {
      const url = new URL(req.url ?? "/", "http://fake");
      let body: unknown;
      try {
        body = raw.length > 0 ? JSON.parse(raw) : undefined;
      } catch {
        return sendError(res, 400, "invalid_request_error", "body is not JSON");
      }
      const recorded: RecordedRequest = { method: req.method ?? "", path: url.pathname, query: url.search, headers: req.headers, body };
      requests.push(recorded);
      route(recorded, res);
    });
  };
  const server = options.tls ? createTlsServer(options.tls, handler) : createServer(handler);

  function route(r: RecordedRequest, res: ServerResponse): void {
    const body = (r.body ?? {}) as MessagesRequest;
    if (r.method === "POST" && r.path === "/v1/messages") {
      const offersTools = Array.isArray(body.tools) && body.tools.length > 0;
      let reply = sideReply;
      if (offersTools && queue.length > 0) {
        const next = queue.shift()!;
        reply = typeof next === "function" ? next(r) : next;
        scripted.push(r);
      }
      const message = messageFor(reply, body);
      if (body.stream === true) stream(res, message);
      else sendJson(res, 200, message);
      return;
    }
    if (r.method === "POST" && r.path === "/v1/messages/count_tokens") {
      sendJson(res, 200, { input_tokens: roughTokens(r.body) });
      return;
    }
    if (r.method === "GET" && r.path === "/v1/models") {
      const data = MODELS.map((id) => ({ type: "model", id, display_name: id, created_at: "2025-01-01T00:00:00Z" }));
      sendJson(res, 200, { data, has_more: false, first_id: data[0]!.id, last_id: data.at(-1)!.id });
      return;
    }
    sendError(res, 404, "not_found_error", `${r.method} ${r.path} is not faked`);
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, options.host ?? "127.0.0.1", resolve);
  });
  const { port, address } = server.address() as AddressInfo;
  return {
    url: (host = address) => `${options.tls ? "https" : "http"}://${host}:${port}`,
    port,
    requests,
    scripted,
    pending: () => queue.length,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

interface MessagesRequest {
  model?: string;
  stream?: boolean;
  tools?: unknown[];
}

type ContentBlock = { type: "text"; text: string } | { type: "tool_use"; id: string; name: string; input: Record<string, unknown> };

interface Message {
  id: string;
  type: "message";
  role: "assistant";
  model: string;
  content: ContentBlock[];
  stop_reason: "end_turn" | "tool_use";
  stop_sequence: null;
  usage: { input_tokens: number; output_tokens: number; cache_creation_input_tokens: number; cache_read_input_tokens: number };
}

function messageFor(reply: FakeReply, req: MessagesRequest): Message {
  const block: ContentBlock =
    "text" in reply
      ? { type: "text", text: reply.text }
      : { type: "tool_use", id: `toolu_${randomBytes(12).toString("hex")}`, name: reply.toolUse.name, input: reply.toolUse.input };
  return {
    id: `msg_${randomBytes(12).toString("hex")}`,
    type: "message",
    role: "assistant",
    model: req.model ?? MODELS[0]!,
    content: [block],
    stop_reason: block.type === "tool_use" ? "tool_use" : "end_turn",
    stop_sequence: null,
    usage: { input_tokens: roughTokens(req), output_tokens: roughTokens(block), cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
  };
}

/** The event sequence of the real streaming API, text and JSON split across deltas. */
function stream(res: ServerResponse, m: Message): void {
  res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", "request-id": `req_${randomBytes(8).toString("hex")}` });
  const send = (event: string, data: object): boolean => res.write(`event: ${event}\ndata: ${JSON.stringify({ type: event, ...data })}\n\n`);
  send("message_start", { message: { ...m, content: [], stop_reason: null, usage: { ...m.usage, output_tokens: 1 } } });
  m.content.forEach((block, index) => {
    if (block.type === "text") {
      send("content_block_start", { index, content_block: { type: "text", text: "" } });
      send("ping", {});
      for (const piece of halves(block.text)) send("content_block_delta", { index, delta: { type: "text_delta", text: piece } });
    } else {
      send("content_block_start", { index, content_block: { type: "tool_use", id: block.id, name: block.name, input: {} } });
      for (const piece of halves(JSON.stringify(block.input))) send("content_block_delta", { index, delta: { type: "input_json_delta", partial_json: piece } });
    }
    send("content_block_stop", { index });
  });
  send("message_delta", { delta: { stop_reason: m.stop_reason, stop_sequence: null }, usage: { output_tokens: m.usage.output_tokens } });
  send("message_stop", {});
  res.end();
}

function halves(s: string): string[] {
  const mid = Math.ceil(s.length / 2);
  return s.length < 2 ? [s] : [s.slice(0, mid), s.slice(mid)];
}

function roughTokens(x: unknown): number {
  return Math.max(1, Math.ceil(JSON.stringify(x ?? "").length / 4));
}

function sendJson(res: ServerResponse, status: number, body: object): void {
  res.writeHead(status, { "content-type": "application/json", "request-id": `req_${randomBytes(8).toString("hex")}` });
  res.end(JSON.stringify(body));
}

function sendError(res: ServerResponse, status: number, type: string, message: string): void {
  sendJson(res, status, { type: "error", error: { type, message } });
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}
