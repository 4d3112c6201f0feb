import { Code, ConnectError } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import type { TransportFactory } from "./client.js";

/** Bun's fetch takes a unix socket to connect through. */
type BunFetchInit = RequestInit & { unix?: string };

/** Bun's names for a connection that failed, as the system error codes connect-node reports. */
const SYSTEM_CODES: Record<string, string> = {
  ConnectionRefused: "ECONNREFUSED",
  ECONNREFUSED: "ECONNREFUSED",
  FailedToOpenSocket: "ENOENT",
  ENOENT: "ENOENT",
  ConnectionClosed: "ECONNRESET",
  ECONNRESET: "ECONNRESET",
  EPIPE: "EPIPE",
};

/**
 * A failed connection or a cut response, as connect-node reports it: Code.Unavailable, a
 * message naming the system error ("connect ECONNREFUSED 127.0.0.1:7777"), and a cause with
 * its code, so the CLI's "cannot reach the daemon" (exit 5) and the reconnect of `-f`
 * commands see what they see under Node.
 */
function unavailable(error: unknown, where: string, what: string): ConnectError {
  const raw = String((error as { code?: unknown }).code ?? "");
  const code = SYSTEM_CODES[raw] ?? (raw || "ECONNRESET");
  const cause = Object.assign(new Error(`${what} ${code} ${where}`), { code, cause: error });
  return new ConnectError(cause.message, Code.Unavailable, undefined, undefined, cause);
}

/** The body, with a read that fails (the daemon went away mid-stream) turned into Code.Unavailable. */
function guardedBody(body: ReadableStream<Uint8Array>, where: string): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (error) {
        controller.error((error as Error).name === "AbortError" ? error : unavailable(error, where, "read"));
      }
    },
    cancel: (reason) => reader.cancel(reason),
  });
}

/**
 * Connect over Bun's native fetch (HTTP/1.1, binary): what the CLI uses in the binary,
 * where loading node:http and connect-node was most of a call's start-up.
 */
export const fetchTransport: TransportFactory = ({ baseUrl, socketPath, interceptors }) => {
  const where = socketPath ? `unix:${socketPath}` : new URL(baseUrl).host;
  const fetchVia = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    let res: Response;
    try {
      res = await fetch(input, { ...init, ...(socketPath ? { unix: socketPath } : {}) } as BunFetchInit);
    } catch (error) {
      if (init?.signal?.aborted) throw error;
      throw unavailable(error, where, "connect");
    }
    if (!res.body) return res;
    return new Response(guardedBody(res.body, where), { status: res.status, statusText: res.statusText, headers: res.headers });
  };
  return createConnectTransport({ baseUrl, useBinaryFormat: true, interceptors, fetch: fetchVia as typeof fetch });
};
