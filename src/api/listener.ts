import { chmod, rm } from "node:fs/promises";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { Duplex } from "node:stream";

export type RequestHandler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

export interface ListenOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Also serve on this unix socket (mode 0660) when set. */
  socketPath?: string;
  /** TLS for the TCP listener: HTTP/2 and HTTP/1.1 chosen by ALPN. */
  tls?: { cert: Buffer; key: Buffer };
}

export interface Listener {
  /** The TCP address actually bound. */
  host: string;
  port: number;
  socketPath?: string;
  close(): Promise<void>;
}

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n");

/**
 * One port for every protocol: gRPC needs HTTP/2 without TLS (h2c, "prior knowledge"),
 * Connect and gRPC-Web also come over HTTP/1.1. Node's cleartext http2 server cannot fall
 * back to HTTP/1.1, so we read the first bytes and hand the connection to the right server.
 */
export async function listen(handlers: { tcp: RequestHandler; unix: RequestHandler }, opts: ListenOptions): Promise<Listener> {
  const servers = (handler: RequestHandler) => {
    const h1 = http.createServer(handler as http.RequestListener);
    // Long-lived streams (logs -f, WatchRun) must not be cut by idle timeouts.
    h1.requestTimeout = 0;
    h1.headersTimeout = 60_000;
    h1.keepAliveTimeout = 65_000;
    return { h1, h2: http2.createServer(handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void) };
  };
  // Each listener has its own servers: the unix socket's handler trusts its callers.
  const tcpServers = servers(handlers.tcp);
  const unixServers = servers(handlers.unix);
  const sockets = new Set<net.Socket>();

  const route = ({ h1, h2 }: ReturnType<typeof servers>) => (socket: net.Socket) => {
    // The http2 server cannot set this through the wrapper below; without it, stream
    // frames wait on delayed ACKs (a 25x slower log replay, measured).
    socket.setNoDelay(true);
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.once("error", () => socket.destroy());
    socket.once("data", (first: Buffer) => {
      socket.pause();
      const isH2 = first.subarray(0, Math.min(first.length, H2_PREFACE.length)).equals(H2_PREFACE.subarray(0, Math.min(first.length, H2_PREFACE.length)));
      if (isH2) {
        h2.emit("connection", replay(socket, first));
      } else {
        socket.unshift(first);
        h1.emit("connection", socket);
        socket.resume();
      }
    });
  };

  // With TLS, ALPN picks the protocol, so the secure server takes connections itself.
  const tcp: net.Server = opts.tls
    ? http2.createSecureServer({ cert: opts.tls.cert, key: opts.tls.key, allowHTTP1: true }, handlers.tcp as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void)
    : net.createServer(route(tcpServers));
  if (opts.tls) {
    tcp.on("secureConnection", (s: net.Socket) => {
      s.setNoDelay(true);
      sockets.add(s);
      s.once("close", () => sockets.delete(s));
    });
  }
  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(opts.port, opts.host, () => resolve());
  });
  const addr = tcp.address() as net.AddressInfo;

  let unix: net.Server | undefined;
  if (opts.socketPath) {
    await rm(opts.socketPath, { force: true });
    unix = net.createServer(route(unixServers));
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
