import { createHmac, timingSafeEqual } from "node:crypto";
import { lookup } from "node:dns/promises";
import { createServer, request, STATUS_CODES, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { connect, isIP, type AddressInfo, type Socket } from "node:net";
import { TLSSocket, type SecureContext } from "node:tls";
import { addressClass, type AddressClass } from "./address-class.js";
import { allowedBy, type NetworkPolicy } from "./egress-policy.js";
import { formatHostPort, normalizeHost, parseHostPort, type HostPort } from "./host-name.js";
import { brokerHeader, brokerMatchesHost, brokerMatchesPath, normalizedPath, scrubSecrets, type BrokeredSecret } from "./secret-broker.js";

export type EgressVerdict = "allowed" | "refused";

export type EgressStage = "setup" | "agent";

export interface EgressProxyOptions {
  /** Address to listen on: the sandboxes' network gateway, which nothing else shares. */
  host: string;
  /** Fixed, so proxy URLs handed to sandboxes stay valid across daemon restarts. */
  port: number;
  /** Signs the per-run, per-stage proxy credentials (stable across restarts). */
  key: Buffer;
  /** The policy of a run's stage now; null for a run that is not live. */
  policyFor: (runId: string, stage: EgressStage) => NetworkPolicy | null;
  /**
   * Names resolved here instead of by DNS ("name" → "ip"), e.g. for a split-horizon host.
   * Trusted: the only way a sandbox reaches a loopback, private or link-local address.
   */
  hostMap: Readonly<Record<string, string>>;
  /** Resolves a name to the one address the proxy connects to; default: the system resolver. */
  resolve?: (host: string) => Promise<string>;
  audit: (runId: string, host: string, port: number, verdict: EgressVerdict) => void;
  log: (msg: string, fields?: Record<string, unknown>) => void;
  /**
   * The brokered secrets of a run's stage for a destination, values included (only those
   * whose rule names it need be given). CONNECTs to their destinations are intercepted (TLS
   * terminated with a certificate from `ca`); all others are tunnels.
   */
  brokersFor?: (runId: string, stage: EgressStage, target: HostPort) => BrokeredSecret[];
  /** Issues the certificates of brokered destinations; without it nothing is intercepted. */
  ca?: { contextFor(host: string): Promise<SecureContext> } | null;
  /** PEM certificates an intercepted request's upstream is verified against; default: the system's. */
  upstreamCa?: string;
  /** One request a brokered secret was added to (its name, never its value). */
  auditBrokered?: (runId: string, host: string, port: number, secretName: string) => void;
}

/** What an intercepted connection was admitted for: every request on it goes there. */
interface Intercepted {
  admitted: Admitted;
  brokers: BrokeredSecret[];
}

/**
 * With a 407: clients that wait to be asked before sending credentials (libcurl's "any"
 * method, which git uses) send them then; without it they give up.
 */
const CHALLENGE = 'Basic realm="paddock egress"';

/** Never forwarded from a sandbox's request upstream. */
const HOP_BY_HOP = ["proxy-authorization", "proxy-connection", "connection", "keep-alive", "te", "trailer", "upgrade"];

interface Grant {
  runId: string;
  stage: EgressStage;
  policy: NetworkPolicy;
}

interface Admitted extends HostPort {
  grant: Grant;
  /** Checked, and the one connected to: no second lookup that could answer differently. */
  address: string;
}

interface Refusal {
  status: 400 | 403 | 407 | 502;
  message: string;
}

async function systemLookup(host: string): Promise<string> {
  return (await lookup(host)).address;
}

/**
 * The only way out of a restricted sandbox: an HTTP proxy (CONNECT and plain HTTP) that
 * lets a request through when its host name and port are allowed by the policy of the
 * sandbox stage it authenticates as, and the name leads to the internet (or is mapped by
 * the operator). Every destination is audited, allowed or refused.
 */
export class EgressProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly hostMap = new Map<string, string>();
  private readonly lookup: (host: string) => Promise<string>;
  /** Parses the requests inside intercepted TLS connections; never listens itself. */
  private readonly inner = createServer((req, res) => void this.brokered(req, res));
  private readonly intercepted = new WeakMap<Socket, Intercepted>();
  private readonly upstreamAgent = new HttpsAgent({ keepAlive: true, maxSockets: 256 });
  port = 0;

  constructor(private readonly opts: EgressProxyOptions) {
    for (const [name, ip] of Object.entries(opts.hostMap)) {
      const host = normalizeHost(name);
      if (host === null) throw new Error(`egress host map: ${JSON.stringify(name)} is not a host name`);
      this.hostMap.set(host, ip);
    }
    this.lookup = opts.resolve ?? systemLookup;
  }

  async start(): Promise<void> {
    const server = createServer((req, res) => void this.forward(req, res));
    server.on("connect", (req: IncomingMessage, socket: Socket, head: Buffer) => void this.tunnel(req, socket, head));
    server.on("connection", (s: Socket) => {
      this.sockets.add(s);
      s.once("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.opts.port, this.opts.host, () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.upstreamAgent.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  /**
   * The proxy URL for one stage of one run. Its credential names the run and stage and is
   * signed with the daemon's key, so the setup script and the agent each get their own
   * policy, and nothing needs remembering across a restart.
   */
  urlFor(runId: string, stage: EgressStage): string {
    return `http://${runId}.${stage}:${this.sign(runId, stage).toString("base64url")}@${this.opts.host}:${this.port}`;
  }

  private sign(runId: string, stage: EgressStage): Buffer {
    return createHmac("sha256", this.opts.key).update(`egress:${runId}.${stage}`).digest().subarray(0, 18);
  }

  private grantOf(req: IncomingMessage): Grant | null {
    const m = /^Basic\s+(\S+)$/i.exec(req.headers["proxy-authorization"] ?? "");
    if (!m) return null;
    const decoded = Buffer.from(m[1]!, "base64").toString("utf8");
    const user = /^(run_[a-z0-9]+)\.(setup|agent):(.+)$/.exec(decoded);
    if (!user) return null;
    const [, runId, stage, given] = user as unknown as [string, string, EgressStage, string];
    const expected = this.sign(runId, stage);
    const got = Buffer.from(given, "base64url");
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) return null;
    const policy = this.opts.policyFor(runId, stage);
    return policy ? { runId, stage, policy } : null;
  }

  /**
   * Decides one request, in an order that leaks nothing: who asks, what it asks for, the
   * policy (a refused name is never looked up), then where the name leads. Audits the
   * verdict of every authenticated request that names a valid target.
   */
  private async admit(req: IncomingMessage, target: HostPort | null, hostHeader?: string): Promise<Admitted | Refusal> {
    const grant = this.grantOf(req);
    if (!grant) return { status: 407, message: "proxy authentication required" };
    if (!target) return { status: 400, message: "the request's target is not a valid host name and port" };
    if (hostHeader !== undefined) {
      const named = parseHostPort(hostHeader, 80);
      if (!named || named.host !== target.host || named.port !== target.port) {
        return { status: 400, message: `the Host header must name the request's target, ${formatHostPort(target)}` };
      }
    }
    const { host, port } = target;
    if (!allowedBy(grant.policy, host, port)) {
      return this.refuse(grant, target, `${formatHostPort(target)} is not allowed by the environment's network policy (ports other than 80 and 443 must be listed as name:port)`);
    }
    // The operator's host map is trusted: it is how internal hosts are allowed at all.
    let address = this.hostMap.get(host);
    if (address === undefined) {
      let cls: AddressClass;
      try {
        address = isIP(host) ? host : await this.lookup(host);
        cls = addressClass(address);
      } catch {
        this.verdict(grant, target, "allowed");
        return { status: 502, message: `cannot resolve ${host}` };
      }
      if (cls !== "public") {
        const what = isIP(host) ? `${host} is a ${cls} address` : `${host} resolves to a ${cls} address`;
        return this.refuse(grant, target, `${what}, which sandboxes may not reach (an operator can map a name to it with --egress-host-map)`);
      }
    }
    this.verdict(grant, target, "allowed");
    return { grant, host, port, address };
  }

  private refuse(grant: Grant, target: HostPort, message: string): Refusal {
    this.verdict(grant, target, "refused", message);
    return { status: 403, message };
  }

  private verdict(grant: Grant, { host, port }: HostPort, verdict: EgressVerdict, reason?: string): void {
    this.opts.audit(grant.runId, host, port, verdict);
    this.opts.log(verdict === "allowed" ? "egress allowed" : "egress refused", { runId: grant.runId, stage: grant.stage, host, port, ...(reason ? { reason } : {}) });
  }

  private async tunnel(req: IncomingMessage, client: Socket, head: Buffer): Promise<void> {
    client.on("error", () => client.destroy());
    const admitted = await this.admit(req, parseHostPort(req.url ?? "", 443));
    if ("status" in admitted) {
      const challenge = admitted.status === 407 ? `proxy-authenticate: ${CHALLENGE}\r\n` : "";
      const body = `paddock egress: ${admitted.message}\n`;
      // Framed and closed: a client answering the challenge does so on a new connection.
      client.end(`HTTP/1.1 ${admitted.status} ${STATUS_CODES[admitted.status]}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n${challenge}\r\n${body}`);
      return;
    }
    let brokers: BrokeredSecret[];
    try {
      brokers = (this.opts.ca && this.opts.brokersFor?.(admitted.grant.runId, admitted.grant.stage, admitted).filter((b) => brokerMatchesHost(b.rule, admitted.host, admitted.port))) || [];
    } catch (error) {
      // E.g. a sealed value that no longer opens: never a tunnel in the secret's place, and never a crash.
      this.opts.log("egress: the run's brokered secrets cannot be read", { runId: admitted.grant.runId, host: admitted.host, error: (error as Error).message });
      client.end("HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: 55\r\nconnection: close\r\n\r\npaddock egress: this run's brokered secrets are broken\n");
      return;
    }
    if (brokers.length > 0) {
      await this.intercept(client, head, { admitted, brokers });
      return;
    }
    const upstream = connect(admitted.port, admitted.address);
    upstream.once("connect", () => {
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    const close = () => {
      upstream.destroy();
      client.destroy();
    };
    upstream.once("error", () => client.end("HTTP/1.1 502 Bad Gateway\r\n\r\n"));
    client.once("error", close);
    client.once("close", close);
  }

  /**
   * A brokered destination: TLS is terminated here with a short-lived certificate for the
   * admitted host alone (whatever name the client's SNI gives), and each request on the
   * connection is forwarded to that host over real, verified TLS with the secrets added.
   */
  private async intercept(client: Socket, head: Buffer, ctx: Intercepted): Promise<void> {
    let secureContext: SecureContext;
    try {
      secureContext = await this.opts.ca!.contextFor(ctx.admitted.host);
    } catch (error) {
      this.opts.log("egress: no certificate for a brokered destination", { host: ctx.admitted.host, error: (error as Error).message });
      client.end("HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\n\r\npaddock egress: cannot intercept this destination\n");
      return;
    }
    client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
    if (head.length) client.unshift(head);
    const tls = new TLSSocket(client, { isServer: true, secureContext, ALPNProtocols: ["http/1.1"] });
    tls.on("error", () => tls.destroy());
    client.once("close", () => tls.destroy());
    this.intercepted.set(tls, ctx);
    this.inner.emit("connection", tls);
  }

  /** One request inside an intercepted connection. */
  private brokered(req: IncomingMessage, res: ServerResponse): void {
    const ctx = this.intercepted.get(req.socket);
    if (!ctx) {
      res.destroy();
      return;
    }
    const { admitted, brokers } = ctx;
    const fail = (status: number, message: string): void => {
      if (res.headersSent) res.destroy();
      else res.writeHead(status, { "content-type": "text/plain" }).end(`paddock egress: ${scrubSecrets(message, brokers)}\n`);
    };
    // The destination is the CONNECT's: a Host naming another cannot move the secret.
    const named = parseHostPort(req.headers.host ?? "", 443);
    if (!named || named.host !== admitted.host || named.port !== admitted.port) {
      return fail(400, `the Host header must name the connection's destination, ${formatHostPort(admitted)}`);
    }
    const path = normalizedPath(req.url ?? "");
    if (path === null) return fail(400, "the request target must be a path");
    const headers: OutgoingHttpHeaders = { ...req.headers };
    for (const h of HOP_BY_HOP) delete headers[h];
    const used: string[] = [];
    for (const b of brokers) {
      if (!brokerMatchesPath(b.rule, path)) continue;
      const [name, value] = brokerHeader(b);
      headers[name] = value;
      used.push(b.name);
    }
    for (const name of used) this.opts.auditBrokered?.(admitted.grant.runId, admitted.host, admitted.port, name);
    const upstream = httpsRequest(
      {
        host: admitted.address,
        port: admitted.port,
        // Verified as the name the sandbox asked for (SNI and identity check), against the host's trust store or the operator's.
        servername: admitted.host,
        ca: this.opts.upstreamCa || undefined,
        agent: this.upstreamAgent,
        method: req.method,
        path,
        headers,
        setHost: false,
      },
      (up) => {
        // The upstream connection's keep-alive is the proxy's business; the sandbox's follows its own request.
        const headers = { ...up.headers };
        for (const h of HOP_BY_HOP) delete headers[h];
        res.writeHead(up.statusCode ?? 502, headers);
        up.pipe(res);
      },
    );
    upstream.once("error", (e) => {
      this.opts.log("egress: brokered request failed", { runId: admitted.grant.runId, host: admitted.host, error: scrubSecrets(e.message, brokers) });
      fail(502, `${formatHostPort(admitted)}: ${(e as NodeJS.ErrnoException).code ?? "upstream error"}`);
    });
    req.pipe(upstream);
  }

  private async forward(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? "");
      if (url.protocol !== "http:") throw new Error("not http");
    } catch {
      res.writeHead(400, { "content-type": "text/plain" }).end("paddock egress: requests must use an absolute http:// URL\n");
      return;
    }
    const target = parseHostPort(url.host, 80);
    // Node keeps the first Host header of a request and drops the rest, as does the upstream request below.
    const admitted = await this.admit(req, target, req.headers.host ?? "");
    if ("status" in admitted) {
      res.writeHead(admitted.status, { "content-type": "text/plain", ...(admitted.status === 407 ? { "proxy-authenticate": CHALLENGE } : {}) }).end(`paddock egress: ${admitted.message}\n`);
      return;
    }
    const headers = { ...req.headers };
    delete headers["proxy-authorization"];
    delete headers["proxy-connection"];
    const upstream = request({ host: admitted.address, port: admitted.port, method: req.method, path: url.pathname + url.search, headers, setHost: false }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.once("error", (e) => (res.headersSent ? res.destroy() : res.writeHead(502).end(`paddock egress: ${e.message}\n`)));
    req.pipe(upstream);
  }
}
