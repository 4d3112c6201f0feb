import type * as http from "node:http";
import type * as http2 from "node:http2";
import type * as net from "node:net";

/** How long connections may idle, how many there may be, how long streams are kept alive. */
export interface ConnectionOptions {
  /** A connection with no request in flight is closed after this long; open streams never count as idle. */
  idleTimeoutMs: number;
  /** A new connection must finish its TLS handshake and start its first request within this. */
  headersTimeoutMs: number;
  /** TCP connections open at once; more are refused (the unix socket is not counted). */
  maxConnections: number;
  /** TCP connections open at once from one remote address. */
  maxConnectionsPerAddress: number;
  /** HTTP/2 PING interval while streams are open; a peer that misses a whole interval is dropped. */
  keepAliveIntervalMs: number;
}

export const DEFAULT_CONNECTION_OPTIONS: ConnectionOptions = {
  idleTimeoutMs: 30_000,
  headersTimeoutMs: 10_000,
  maxConnections: 1000,
  maxConnectionsPerAddress: 100,
  keepAliveIntervalMs: 30_000,
};

/** Paths a connection admitted into the reserve may use: health checks only. */
const RESERVED_FOR = "/grpc.health.v1.Health/";

/** An HTTP/2 connection's socket (TLS, or the replay stream) carries its admission to the session. */
export const kAdmission = Symbol("paddock admission");
export type Tagged = { [kAdmission]?: Admission };

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;

/**
 * One HTTP/1.1 connection or HTTP/2 session: closed after idling with no request in
 * flight; while HTTP/2 streams are open, pinged so a vanished peer does not hold them.
 */
class Connection {
  private active = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  private pingPending = false;

  constructor(
    private readonly admission: Admission,
    private readonly opts: ConnectionOptions,
    private readonly close: () => void,
    private readonly ping?: (ack: () => void) => boolean,
  ) {
    this.armIdle();
  }

  /** Admitted into the reserve: health checks only, closed after its first response. */
  get reserved(): boolean {
    return this.admission.reserved;
  }

  begin(): void {
    this.admission.started();
    this.active++;
    clearTimeout(this.idleTimer);
    if (this.ping && !this.pingTimer) this.pingTimer = setInterval(() => this.keepAlive(), this.opts.keepAliveIntervalMs).unref();
  }

  end(): void {
    this.active--;
    if (this.reserved) return this.close();
    if (this.active === 0) {
      clearInterval(this.pingTimer);
      this.pingTimer = undefined;
      this.armIdle();
    }
  }

  dispose(): void {
    clearTimeout(this.idleTimer);
    clearInterval(this.pingTimer);
  }

  private armIdle(): void {
    clearTimeout(this.idleTimer);
    const ms = this.reserved ? Math.min(this.opts.idleTimeoutMs, this.opts.headersTimeoutMs) : this.opts.idleTimeoutMs;
    this.idleTimer = setTimeout(() => this.close(), ms).unref();
  }

  private keepAlive(): void {
    if (this.pingPending) return this.close();
    this.pingPending = this.ping!(() => (this.pingPending = false));
  }
}

/** What the guard knows of a socket it let in. */
export interface Admission {
  /** Admitted into the reserve beyond the caps: health checks only. */
  reserved: boolean;
  /** The first bytes came (or the TLS handshake finished): the first-bytes timer stops. */
  talking(): void;
  /** A request began: a reserved connection can no longer be evicted. */
  started(): void;
}

/**
 * Connection hygiene for the one port: caps on open connections (total and per remote
 * address) with a small reserve that only health checks may use, so a flood cannot make
 * the daemon look dead; idle and header timeouts; HTTP/2 keep-alive pings.
 */
export function createConnectionGuard(opts: ConnectionOptions) {
  // A share beyond the caps, for health checks while the caps are full.
  const reserve = Math.max(4, Math.ceil(opts.maxConnections / 32));
  let total = 0;
  const perAddress = new Map<string, number>();
  const reserved = new Set<net.Socket>();
  // Reserved connections that have not started a request, oldest first: a newcomer evicts
  // the oldest, so a flood cannot hold the reserve against a health check.
  const evictable = new Set<net.Socket>();
  const sessions = new WeakMap<http2.Http2Session, Connection>();
  const http1Sockets = new WeakMap<object, Connection>();

  const release = (address: string) => {
    total--;
    const n = (perAddress.get(address) ?? 1) - 1;
    if (n > 0) perAddress.set(address, n);
    else perAddress.delete(address);
  };

  return {
    /**
     * Lets a new connection in, or destroys it (undefined). `capped` connections (TCP) count
     * against the caps; past them they go to the reserve. Every connection must start
     * talking within the header timeout.
     */
    admit(socket: net.Socket, capped: boolean): Admission | undefined {
      const address = socket.remoteAddress ?? "";
      let inReserve = false;
      if (capped) {
        if (!address) {
          socket.destroy();
          return undefined;
        }
        const fromAddress = perAddress.get(address) ?? 0;
        inReserve = total >= opts.maxConnections || fromAddress >= opts.maxConnectionsPerAddress;
        if (inReserve && reserved.size >= reserve) {
          const oldest = evictable.values().next();
          if (oldest.done) {
            socket.destroy();
            return undefined;
          }
          reserved.delete(oldest.value);
          evictable.delete(oldest.value);
          oldest.value.destroy();
        }
        if (inReserve) {
          reserved.add(socket);
          evictable.add(socket);
        } else {
          total++;
          perAddress.set(address, fromAddress + 1);
        }
      }
      const timer = setTimeout(() => socket.destroy(), Math.min(opts.headersTimeoutMs, opts.idleTimeoutMs)).unref();
      const counted = capped && !inReserve;
      socket.once("close", () => {
        clearTimeout(timer);
        reserved.delete(socket);
        evictable.delete(socket);
        if (counted) release(address);
      });
      return {
        reserved: inReserve,
        talking: () => clearTimeout(timer),
        started: () => evictable.delete(socket),
      };
    },

    /** Tracks an HTTP/1.1 connection on `socket` (raw or TLS). */
    http1(socket: net.Socket, admission: Admission): void {
      const conn = new Connection(admission, opts, () => {
        // FIN after what was written; a peer that keeps its half open is cut later.
        socket.end();
        setTimeout(() => socket.destroy(), opts.headersTimeoutMs).unref();
      });
      http1Sockets.set(socket, conn);
      socket.once("close", () => conn.dispose());
    },

    /** Tracks an HTTP/2 session; its socket carries the admission, tagged before the session began. */
    http2(session: http2.ServerHttp2Session): void {
      const admission = (session.socket as net.Socket & Tagged)[kAdmission] ?? { reserved: false, talking: () => {}, started: () => {} };
      const conn = new Connection(
        admission,
        opts,
        () => {
          // GOAWAY; a peer that does not then close is cut after the header timeout.
          if (!session.closed) session.close();
          setTimeout(() => session.destroy(), opts.headersTimeoutMs).unref();
        },
        (ack) => session.ping((error) => !error && ack()),
      );
      sessions.set(session, conn);
      session.once("close", () => conn.dispose());
    },

    /** The request handler, counting requests per connection and holding reserved ones to health checks. */
    handler<H extends (req: Request, res: Response) => void>(inner: H): H {
      return ((req: Request, res: Response) => {
        const conn = req.httpVersionMajor === 2 ? sessions.get((req as http2.Http2ServerRequest).stream.session!) : http1Sockets.get(req.socket);
        if (!conn) return inner(req, res);
        conn.begin();
        res.once("close", () => conn.end());
        if (conn.reserved && !req.url?.startsWith(RESERVED_FOR)) {
          // 503 is UNAVAILABLE to gRPC and Connect clients alike.
          (res as http.ServerResponse).writeHead(503, { "content-type": "text/plain" });
          res.end("too many connections");
          return;
        }
        inner(req, res);
      }) as H;
    },
  };
}
