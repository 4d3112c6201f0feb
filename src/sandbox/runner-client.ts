import type { RunnerEventsResponse, RunnerHealth, StartRequest } from "../agent/runner-protocol.js";
import { SandboxError } from "../errors.js";

/** The daemon's side of the runner API. Network failures surface as retryable SandboxErrors. */
export function createRunnerClient(endpoint: string, token: string) {
  async function call<T>(method: "GET" | "POST", path: string, signal?: AbortSignal, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(endpoint + path, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
        body: body ? JSON.stringify(body) : undefined,
        signal,
      });
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new SandboxError(`runner at ${endpoint} unreachable: ${(error as Error).message}`, true, { cause: error });
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new SandboxError(`runner ${method} ${path}: HTTP ${res.status}`, res.status >= 500);
    }
    return (await res.json()) as T;
  }
  /** The agent's work as a git bundle (empty when it made no commits) and its branch head. */
  async function exportWork(signal?: AbortSignal): Promise<{ branch: string; head: string; bundle: Buffer }> {
    let res: Response;
    try {
      res = await fetch(endpoint + "/export", { method: "POST", headers: { authorization: `Bearer ${token}` }, signal });
    } catch (error) {
      throw new SandboxError(`runner at ${endpoint} unreachable: ${(error as Error).message}`, true, { cause: error });
    }
    if (!res.ok) throw new SandboxError(`runner POST /export: HTTP ${res.status}`, res.status >= 500);
    return { branch: res.headers.get("x-paddock-branch") ?? "", head: res.headers.get("x-paddock-head") ?? "", bundle: Buffer.from(await res.arrayBuffer()) };
  }
  return {
    exportWork,
    health: (signal?: AbortSignal) => call<RunnerHealth>("GET", "/health", signal),
    events: (afterSeq: number, waitMs: number, signal?: AbortSignal) =>
      call<RunnerEventsResponse>("GET", `/events?after_seq=${afterSeq}&wait_ms=${waitMs}`, signal),
    start: (body: StartRequest, signal?: AbortSignal) => call<{ ok: boolean }>("POST", "/start", signal, body),
    cancel: (signal?: AbortSignal) => call<{ ok: boolean }>("POST", "/cancel", signal),
    shutdown: (signal?: AbortSignal) => call<{ ok: boolean }>("POST", "/shutdown", signal),
  };
}
export type RunnerClient = ReturnType<typeof createRunnerClient>;
