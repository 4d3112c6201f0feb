import { chmod, rm } from "node:fs/promises";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { Duplex } from "node:stream";
import type * as tls from "node:tls";
import { createConnectionGuard, DEFAULT_CONNECTION_OPTIONS, kAdmission, type Admission, type ConnectionOptions, type Tagged } from "./connection-guard.js";

export type RequestHandler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

export interface ListenOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Also serve on this unix socket (mode 0660) when set. */
  socketPath?: string;
  /** TLS for the TCP listener: HTTP/2 and HTTP/1.1 chosen by ALPN. */
  tls?: { cert: Buffer; key: Buffer };
  /** Timeouts, caps and keep-alive; defaults in DEFAULT_CONNECTION_OPTIONS. */
  connections?: Partial<ConnectionOptions>;
  /** How long close() waits for requests in flight to finish before cutting them; default 5 s. */
  drainMs?: number;
}

export interface Listener {
  /** The TCP address actually bound. */
  host: string;
  port: number;
  socketPath?: string;
  /**
   * Stops accepting connections at once, lets requests in flight finish (streams are
   * ended by the daemon's shutdown signal) for up to drainMs, then cuts what is left.
   */
  close(): Promise<void>;
}

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n");

type Http2Handler = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void;

/**
 * One port for every protocol: gRPC needs HTTP/2 without TLS (h2c, "prior knowledge"),
 * Connect and gRPC-Web also come over HTTP/1.1. Node's cleartext http2 server cannot fall
 * back to HTTP/1.1, so we read the first bytes and hand the connection to the right server.
 * The TCP side is capped and every connection is timed out when idle (connection-guard.ts);
 * the unix socket has the timeouts but no caps, so local tools always get in.
 */
export async function listen(handlers: { tcp: RequestHandler; unix: RequestHandler }, opts: ListenOptions): Promise<Listener> {
  const limits = { ...DEFAULT_CONNECTION_OPTIONS, ...opts.connections };
  const guard = createConnectionGuard(limits);
  // Requests in flight and HTTP/2 sessions, so close() can drain them.
  let inFlight = 0;
  let drained: (() => void) | undefined;
  const sessions = new Set<http2.ServerHttp2Session>();
  const counted = (handler: RequestHandler): RequestHandler => (req, res) => {
    inFlight++;
    res.once("close", () => {
      if (--inFlight === 0) drained?.();
    });
    handler(req, res);
  };
  const trackSession = (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  };
  const servers = (plain: RequestHandler) => {
    const handler = counted(plain);
    const h1 = http.createServer(guard.handler(handler) as http.RequestListener);
    // Long-lived streams (logs -f, WatchRun) must not be cut: the guard times out only
    // connections with no request in flight, and Node's own per-request timeouts are off.
    h1.requestTimeout = 0;
    h1.headersTimeout = limits.headersTimeoutMs;
    h1.keepAliveTimeout = limits.idleTimeoutMs;
    const h2 = http2.createServer(guard.handler(handler) as Http2Handler);
    h2.on("session", (session: http2.ServerHttp2Session) => {
      guard.http2(session);
      trackSession(session);
    });
    return { h1, h2 };
  };
  // Each listener has its own servers: the unix socket's handler trusts its callers.
  const tcpServers = servers(handlers.tcp);
  const unixServers = servers(handlers.unix);
  const sockets = new Set<net.Socket>();

  const route = ({ h1, h2 }: ReturnType<typeof servers>, capped: boolean) => (socket: net.Socket) => {
    const admitted = guard.admit(socket, capped);
    if (!admitted) return;
    // The http2 server cannot set this through the wrapper below; without it, stream
    // frames wait on delayed ACKs (a 25x slower log replay, measured).
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.once("error", () => socket.destroy());
    socket.once("data", (first: Buffer) => {
      admitted.talking();
      socket.pause();
      const isH2 = first.subarray(0, Math.min(first.length, H2_PREFACE.length)).equals(H2_PREFACE.subarray(0, Math.min(first.length, H2_PREFACE.length)));
      if (isH2) {
        const stream = replay(socket, first);
        (stream as Duplex & Tagged)[kAdmission] = admitted;
        h2.emit("connection", stream);
      } else {
        guard.http1(socket, admitted);
        socket.unshift(first);
        h1.emit("connection", socket);
        socket.resume();
      }
    });
  };

  // With TLS, ALPN picks the protocol, so the secure server takes connections itself.
  let tcp: net.Server;
  if (opts.tls) {
    const handler = guard.handler(counted(handlers.tcp)) as Http2Handler;
    const secure = http2.createSecureServer({ cert: opts.tls.cert, key: opts.tls.key, allowHTTP1: true, handshakeTimeout: limits.headersTimeoutMs }, handler);
    // The TLS socket is made from the raw one out of sight; the remote address and port tie them.
    const admissions = new Map<string, Admission>();
    secure.prependListener("connection", (socket: net.Socket) => {
      const admitted = guard.admit(socket, true);
      if (!admitted) return;
      const key = `${socket.remoteAddress}|${socket.remotePort}`;
      admissions.set(key, admitted);
      socket.once("close", () => admissions.delete(key));
    });
    // Before the server's own listener, which starts the HTTP/2 session or HTTP/1.1 parser.
    secure.prependListener("secureConnection", (s: tls.TLSSocket) => {
      s.setNoDelay(true);
      sockets.add(s);
      s.once("close", () => sockets.delete(s));
      const admitted = admissions.get(`${s.remoteAddress}|${s.remotePort}`);
      if (!admitted) return void s.destroy();
      admitted.talking();
      if (s.alpnProtocol === "h2") (s as tls.TLSSocket & Tagged)[kAdmission] = admitted;
      else guard.http1(s, admitted);
    });
    secure.on("session", (session: http2.ServerHttp2Session) => {
      guard.http2(session);
      trackSession(session);
    });
    tcp = secure;
  } else {
    tcp = net.createServer(route(tcpServers, true));
  }
  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(opts.port, opts.host, () => resolve());
  });
  const addr = tcp.address() as net.AddressInfo;

  let unix: net.Server | undefined;
  if (opts.socketPath) {
    await rm(opts.socketPath, { force: true });
    unix = net.createServer(route(unixServers, false));
    const server = unix;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(opts.socketPath, () => resolve());
    });
    await chmod(opts.socketPath, 0o660);
  }

  return {
    host: addr.address,
    port: addr.port,
    socketPath: opts.socketPath,
    async close() {
      const closed = [tcp, unix].filter((s): s is net.Server => !!s).map((s) => new Promise<void>((r) => s.close(() => r())));
      // GOAWAY: HTTP/2 clients open no new streams here; open ones may still end properly.
      for (const session of sessions) session.close();
      tcpServers.h1.closeIdleConnections();
      unixServers.h1.closeIdleConnections();
      if (inFlight > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, opts.drainMs ?? 5000);
          drained = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
      // end(), not destroy(): the last frames (trailers, GOAWAY) are still in the write buffers.
      const ended = [...sockets].map((s) => new Promise<void>((r) => (s.once("close", () => r()), s.end())));
      await Promise.race([Promise.all(ended), new Promise((r) => setTimeout(r, 1000).unref())]);
      for (const s of sockets) s.destroy();
      tcpServers.h1.closeAllConnections();
      unixServers.h1.closeAllConnections();
      await Promise.all(closed);
      if (opts.socketPath) await rm(opts.socketPath, { force: true });
    },
  };
}

/**
 * A stream that yields `first` and then the socket's data. Node's http2 reads a real
 * socket from its native handle, past anything unshifted, so it gets this wrapper instead.
 */
function replay(socket: net.Socket, first: Buffer): Duplex {
  const duplex = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, encoding, cb) {
      socket.write(chunk, encoding, cb);
    },
    final(cb) {
      socket.end();
      cb();
    },
    destroy(error, cb) {
      socket.destroy();
      cb(error);
    },
  });
  duplex.push(first);
  socket.on("data", (chunk: Buffer) => {
    if (!duplex.push(chunk)) socket.pause();
  });
  socket.on("end", () => duplex.push(null));
  socket.on("close", () => duplex.destroy());
  socket.on("error", (error) => duplex.destroy(error));
  socket.resume();
  return duplex;
}
