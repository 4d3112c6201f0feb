import { createReadStream } from "node:fs";
import { open, stat } from "node:fs/promises";
import { Agent, request as httpRequest } from "node:http";
import type { ClientRequest, IncomingMessage, RequestOptions } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { rootCertificates } from "node:tls";
import {
  CLAIM_ACCEPTED_HEADER,
  CLAIM_PATH,
  COLLECT_HEADER,
  COLLECT_PATH,
  type CollectManifest,
  POOL_HEALTH_PATH,
  type ClaimRequest,
  EXPORT_BRANCH_HEADER,
  EXPORT_HEAD_HEADER,
  HANDOFF_HEADER,
  type HandoffState,
  type PermissionResponse,
  type PromptRequest,
  type RunnerEventsResponse,
  type RunnerHealth,
  type StartRequest,
} from "../agent/runner-protocol.js";
import { SandboxError } from "../errors.js";

// node:http with keep-alive rather than fetch: under Node, fetch costs about a millisecond
// of CPU per call, which showed in provisioning throughput (bench transitions).
const agent = new Agent({ keepAlive: true, maxSockets: 64 });
/** Runners behind a TLS tunnel (modal): the public roots, plus the operator's CA when configured. */
let httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 64 });

/**
 * Extra CA certificates (PEM) trusted for runners reached over https, besides the public
 * roots: a test's tunnel CA, or a private one in front of the tunnels. One per process.
 */
export function trustRunnerCa(pem: string): void {
  httpsAgent.destroy();
  httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 64, ca: [...rootCertificates, pem] });
}

function request(url: URL, options: RequestOptions, callback?: (res: IncomingMessage) => void): ClientRequest {
  return url.protocol === "https:" ? httpsRequest(url, { ...options, agent: httpsAgent }, callback) : httpRequest(url, { ...options, agent }, callback);
}

interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

function send(url: URL, method: string, headers: Record<string, string>, body: string | undefined, signal?: AbortSignal): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

function stream(url: URL, headers: Record<string, string>, signal?: AbortSignal): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "POST", headers, signal }, resolve);
    req.on("error", reject);
    req.end();
  });
}

async function readAll(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8").slice(0, 4096);
}

/** The daemon's side of the runner API. Network failures surface as retryable SandboxErrors. */
export function createRunnerClient(endpoint: string, token: string) {
  async function raw(method: "GET" | "POST", path: string, signal?: AbortSignal, body?: unknown): Promise<RawResponse> {
    const json = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    if (json !== undefined) headers["content-type"] = "application/json";
    let res: RawResponse;
    try {
      res = await send(new URL(endpoint + path), method, headers, json, signal);
    } catch (error) {
      return unreachable(error, signal);
    }
    if (res.status < 200 || res.status >= 300) {
      // The runner's own words (which field, which state) reach the caller, bounded.
      const detail = runnerWords(res.body.toString("utf8")).slice(0, 300);
      throw new SandboxError(`runner ${method} ${path}: HTTP ${res.status}${detail ? `: ${detail}` : ""}`, res.status >= 500);
    }
    return res;
  }
  /** A call that got no answer: retryable, unless the caller gave up. */
  const unreachable = (error: unknown, signal?: AbortSignal): never => {
    if (signal?.aborted) throw error;
    throw new SandboxError(`runner at ${endpoint} unreachable: ${(error as Error).message}`, true, { cause: error });
  };
  const call = async <T>(method: "GET" | "POST", path: string, signal?: AbortSignal, body?: unknown): Promise<T> =>
    JSON.parse((await raw(method, path, signal, body)).body.toString("utf8")) as T;

  return {
    /**
     * The agent's work: its HEAD and branch, and a git bundle (empty when it made no
     * commits) streamed to `sink`, never held in memory.
     */
    async exportWork(sink: (body: IncomingMessage) => Promise<void>, signal?: AbortSignal): Promise<{ branch: string; head: string }> {
      const res = await stream(new URL(endpoint + "/export"), { authorization: `Bearer ${token}` }, signal).catch((error: unknown) => unreachable(error, signal));
      if (res.statusCode !== 200) {
        const text = await readAll(res);
        const detail = runnerWords(text);
        throw new SandboxError(`runner POST /export: HTTP ${res.statusCode}${detail ? `: ${detail.slice(0, 300)}` : ""}`, (res.statusCode ?? 0) >= 500 && !detail);
      }
      const header = (name: string) => String(res.headers[name] ?? "");
      let branch = "";
      try {
        branch = decodeURIComponent(header(EXPORT_BRANCH_HEADER));
      } catch {
        branch = header(EXPORT_BRANCH_HEADER);
      }
      await sink(res);
      return { branch, head: header(EXPORT_HEAD_HEADER) };
    },
    /**
     * The run's handoff state: the runner stops the agent, takes the state once, and sends
     * its manifest (a header) and bundle (the body, streamed to `sink`).
     */
    async handoff(sink: (body: IncomingMessage) => Promise<void>, signal?: AbortSignal): Promise<HandoffState> {
      const res = await stream(new URL(endpoint + "/handoff"), { authorization: `Bearer ${token}` }, signal).catch((error: unknown) => unreachable(error, signal));
      if (res.statusCode !== 200) {
        const text = await readAll(res);
        const detail = runnerWords(text);
        throw new SandboxError(`runner POST /handoff: HTTP ${res.statusCode}${detail ? `: ${detail.slice(0, 300)}` : ""}`, false);
      }
      const header = String(res.headers[HANDOFF_HEADER] ?? "");
      let state: HandoffState;
      try {
        state = JSON.parse(Buffer.from(header, "base64url").toString("utf8")) as HandoffState;
      } catch {
        res.destroy();
        throw new SandboxError("the runner's handoff manifest is not JSON", false);
      }
      await sink(res);
      return state;
    },
    /**
     * POST /collect: the runner stops the agent and takes its work (and, with `handoff`,
     * its handoff state) in one capture. The work's bundle is written to `workFile`, the
     * handoff's to `handoffFile` unless it is over `maxHandoffBytes` (then it is not read,
     * and the manifest's handoffError says why). Files are written only when there are bytes.
     */
    async collect(o: { handoff: boolean; workFile: string; handoffFile: string; maxHandoffBytes: number }, signal?: AbortSignal): Promise<CollectManifest> {
      const res = await stream(new URL(endpoint + COLLECT_PATH + (o.handoff ? "?handoff=1" : "")), { authorization: `Bearer ${token}` }, signal).catch((error: unknown) => unreachable(error, signal));
      if (res.statusCode !== 200) {
        const detail = runnerWords(await readAll(res));
        throw new SandboxError(`runner POST ${COLLECT_PATH}: HTTP ${res.statusCode}${detail ? `: ${detail.slice(0, 300)}` : ""}`, (res.statusCode ?? 0) >= 500 && !detail, { cause: { status: res.statusCode } });
      }
      let manifest: CollectManifest;
      try {
        manifest = JSON.parse(Buffer.from(String(res.headers[COLLECT_HEADER] ?? ""), "base64url").toString("utf8")) as CollectManifest;
      } catch {
        res.destroy();
        throw new SandboxError("the runner's collect manifest is not JSON", false);
      }
      const size = (n: unknown) => (Number.isSafeInteger(n) && (n as number) >= 0 ? (n as number) : -1);
      const workBytes = size(manifest.work?.bytes);
      const handoffBytes = manifest.handoff ? size(manifest.handoff.bytes) : 0;
      if (workBytes < 0 || handoffBytes < 0) {
        res.destroy();
        throw new SandboxError("the runner's collect manifest has no byte counts", false);
      }
      if (handoffBytes > o.maxHandoffBytes) {
        manifest = { ...manifest, handoff: undefined, handoffError: `the run's handoff bundle is over the daemon's limit of ${o.maxHandoffBytes} bytes (--handoff-max-bytes)` };
      }
      const parts = [{ file: o.workFile, bytes: workBytes }, ...(manifest.handoff ? [{ file: o.handoffFile, bytes: handoffBytes }] : [])];
      try {
        await splitInto(res, parts.filter((p) => p.bytes > 0));
      } catch (error) {
        return unreachable(error, signal);
      } finally {
        res.destroy(); // what is left (a refused handoff) is not read
      }
      return manifest;
    },
    /** Pushes the repository in as a git bundle (POST /import): the mirror of exportWork. */
    async importSource(bundleFile: string, signal?: AbortSignal): Promise<void> {
      const size = (await stat(bundleFile)).size;
      const res = await new Promise<IncomingMessage>((resolve, reject) => {
        const req = request(new URL(endpoint + "/import"), {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/x-git-bundle", "content-length": String(size) },
          signal,
        }, resolve);
        req.on("error", reject);
        createReadStream(bundleFile).on("error", (e) => req.destroy(e)).pipe(req);
      }).catch((error: unknown) => unreachable(error, signal));
      const text = await readAll(res);
      if (res.statusCode === 200) return;
      const detail = runnerWords(text);
      // A checkout that failed (no such branch) will fail again; a runner in trouble may not.
      throw new SandboxError(res.statusCode === 400 ? detail : `runner POST /import: HTTP ${res.statusCode}${detail ? `: ${detail.slice(0, 300)}` : ""}`, (res.statusCode ?? 0) >= 500);
    },
    health: (signal?: AbortSignal) => call<RunnerHealth>("GET", "/health", signal),
    events: (afterSeq: number, waitMs: number, signal?: AbortSignal) =>
      call<RunnerEventsResponse>("GET", `/events?after_seq=${afterSeq}&wait_ms=${waitMs}`, signal),
    start: (body: StartRequest, signal?: AbortSignal) => call<{ ok: boolean }>("POST", "/start", signal, body),
    /** Lets a run held after setup start its agent. */
    continueAfterSetup: (signal?: AbortSignal) => call<{ ok: boolean }>("POST", "/continue", signal),
    cancel: (signal?: AbortSignal) => call<{ ok: boolean }>("POST", "/cancel", signal),
    /** A follow-up turn for an ACP agent, queued behind the current one. */
    prompt: (body: PromptRequest, signal?: AbortSignal) => call<{ ok: boolean }>("POST", "/prompt", signal, body),
    /** A client's answer to a parked permission request. */
    permission: (body: PermissionResponse, signal?: AbortSignal) => call<{ ok: boolean }>("POST", "/permission", signal, body),
    cancelTurn: (signal?: AbortSignal) => call<{ ok: boolean }>("POST", "/cancel-turn", signal),
    shutdown: (signal?: AbortSignal) => call<{ ok: boolean }>("POST", "/shutdown", signal),
    /** A warm pool's runner (the client's token is its claim secret): whether it is up. */
    poolReady: (signal?: AbortSignal) => call<{ pooled: boolean }>("GET", POOL_HEALTH_PATH, signal),
    /**
     * Gives a warm pool's runner its run; resolves once the run's runner listens. `accepted`
     * is called as soon as the runner says it recorded the claim, before its checkout.
     */
    async claim(body: ClaimRequest, signal?: AbortSignal, accepted?: () => void): Promise<void> {
      const res = await new Promise<IncomingMessage>((resolve, reject) => {
        const req = request(new URL(endpoint + CLAIM_PATH), { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, signal }, resolve);
        req.on("error", reject);
        req.end(JSON.stringify(body));
      }).catch((error: unknown) => unreachable(error, signal));
      if (res.statusCode === 200 && res.headers[CLAIM_ACCEPTED_HEADER]) accepted?.();
      const text = await readAll(res).catch((error: unknown) => unreachable(error, signal));
      const detail = runnerWords(text);
      if (res.statusCode !== 200 || detail) throw new SandboxError(`runner POST ${CLAIM_PATH}: ${res.statusCode !== 200 ? `HTTP ${res.statusCode}: ` : ""}${detail.slice(0, 300)}`, (res.statusCode ?? 0) >= 500);
    },
  };
}
export type RunnerClient = ReturnType<typeof createRunnerClient>;

/** A runner from before POST /collect (a container older than the daemon) answered 404. */
export function collectNotServed(error: unknown): boolean {
  return (error as { cause?: { status?: number } }).cause?.status === 404;
}

/** The runner's own words in an error answer (`{"error": "…"}`); "" when it said none. */
function runnerWords(body: string): string {
  try {
    return String((JSON.parse(body) as { error?: unknown }).error ?? "");
  } catch {
    return ""; // not JSON
  }
}

/**
 * Writes the first `bytes` of `body` to the first file, the next to the second, and so on
 * (files 0600). Fails when the body ends before every part is complete.
 */
async function splitInto(body: AsyncIterable<Buffer>, parts: { file: string; bytes: number }[]): Promise<void> {
  if (parts.length === 0) return;
  let i = 0;
  let left = 0;
  let fh: Awaited<ReturnType<typeof open>> | null = null;
  try {
    for await (const data of body) {
      let chunk = data;
      while (chunk.length > 0 && i < parts.length) {
        if (!fh) {
          fh = await open(parts[i]!.file, "w", 0o600);
          left = parts[i]!.bytes;
        }
        const piece = chunk.subarray(0, left);
        await fh.write(piece);
        left -= piece.length;
        chunk = chunk.subarray(piece.length);
        if (left === 0) {
          await fh.close();
          fh = null;
          i++;
        }
      }
      if (i === parts.length) return;
    }
    if (i < parts.length) throw new Error(`the answer ended ${left || parts[i]!.bytes} bytes short`);
  } finally {
    await fh?.close();
  }
}
