import { createHmac, timingSafeEqual } from "node:crypto";
import { lookup } from "node:dns/promises";
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { connect, type AddressInfo, type Socket } from "node:net";
import { allowedBy, type NetworkPolicy } from "./egress-policy.js";

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
  /** Names resolved here instead of by DNS ("name" → "ip"), e.g. for a split-horizon host. */
  hostMap: Readonly<Record<string, string>>;
  audit: (runId: string, host: string, port: number, verdict: EgressVerdict) => void;
  log: (msg: string, fields?: Record<string, unknown>) => void;
}

interface Grant {
  runId: string;
  stage: EgressStage;
  policy: NetworkPolicy;
}

/**
 * The only way out of a restricted sandbox: an HTTP proxy (CONNECT and plain HTTP) that
 * lets a request through when its host name is allowed by the policy of the sandbox stage
 * it authenticates as. Every destination is audited, allowed or refused.
 */
export class EgressProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly opts: EgressProxyOptions) {}

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

  private async resolve(host: string): Promise<string> {
    return this.opts.hostMap[host.toLowerCase()] ?? (await lookup(host)).address;
  }

  private decide(req: IncomingMessage, host: string, port: number): Grant | string {
    const grant = this.grantOf(req);
    if (!grant) return "proxy authentication required";
    const ok = allowedBy(grant.policy, host);
    this.opts.audit(grant.runId, host, port, ok ? "allowed" : "refused");
    this.opts.log(ok ? "egress allowed" : "egress refused", { runId: grant.runId, stage: grant.stage, host, port });
    return ok ? grant : `${host} is not allowed by the environment's network policy`;
  }

  private async tunnel(req: IncomingMessage, client: Socket, head: Buffer): Promise<void> {
    const [host = "", portText = "443"] = (req.url ?? "").split(/:(?=\d+$)/);
    const port = Number(portText);
    const verdict = this.decide(req, host, port);
    if (typeof verdict === "string") {
      const status = verdict.startsWith("proxy auth") ? "407 Proxy Authentication Required" : "403 Forbidden";
      client.end(`HTTP/1.1 ${status}\r\ncontent-type: text/plain\r\n\r\npaddock egress: ${verdict}\n`);
      return;
    }
    try {
      const upstream = connect(port, await this.resolve(host));
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
    } catch (error) {
      client.end(`HTTP/1.1 502 Bad Gateway\r\n\r\npaddock egress: ${(error as Error).message}\n`);
    }
  }

  private async forward(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? "");
    } catch {
      res.writeHead(400).end("paddock egress: requests must use an absolute http:// URL\n");
      return;
    }
    const port = Number(url.port || 80);
    const verdict = this.decide(req, url.hostname, port);
    if (typeof verdict === "string") {
      res.writeHead(verdict.startsWith("proxy auth") ? 407 : 403, { "content-type": "text/plain" }).end(`paddock egress: ${verdict}\n`);
      return;
    }
    try {
      const headers = { ...req.headers };
      delete headers["proxy-authorization"];
      delete headers["proxy-connection"];
      const upstream = request({ host: await this.resolve(url.hostname), port, method: req.method, path: url.pathname + url.search, headers, setHost: false }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      });
      upstream.once("error", (e) => (res.headersSent ? res.destroy() : res.writeHead(502).end(`paddock egress: ${e.message}\n`)));
      req.pipe(upstream);
    } catch (error) {
      res.writeHead(502).end(`paddock egress: ${(error as Error).message}\n`);
    }
  }
}
