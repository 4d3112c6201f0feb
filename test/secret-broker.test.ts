import { randomBytes, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { createServer as createHttpsServer, type Server } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { test as base, describe, expect } from "vitest";
import { BrokerCa, CA_CERT_FILE, CA_KEY_FILE, LEAF_LIFETIME_MS } from "../src/sandbox/broker-ca.js";
import { EgressProxy } from "../src/sandbox/egress-proxy.js";
import { brokeredPlaceholder, type BrokeredSecret } from "../src/sandbox/secret-broker.js";

/**
 * The egress proxy's secret broker with real parts: a CA in a temporary data dir, the
 * proxy on loopback, and HTTPS upstreams on loopback with certificates from a separate test
 * CA, reached by made-up names through the operator's host map (never DNS).
 */
const REAL = `sk-real-${randomBytes(12).toString("hex")}`;
const PLACEHOLDER = brokeredPlaceholder("API_KEY");
const RUN = "run_broker1";

interface Seen {
  host: string;
  path: string;
  headers: IncomingHttpHeaders;
}

interface World {
  proxy: EgressProxy;
  ca: BrokerCa;
  testCa: BrokerCa;
  port: number;
  seen: Seen[];
  brokered: [string, string, number, string][];
  logs: string[];
  auth: string;
}

const test = base.extend<{ world: (o?: { upstreamCa?: boolean; broken?: boolean }) => Promise<World> }>({
  world: async ({}, use) => {
    const dirs: string[] = [];
    const closers: (() => Promise<void>)[] = [];
    await use(async ({ upstreamCa = true, broken = false } = {}) => {
      const dataDir = mkdtempSync(join(tmpdir(), "paddock-broker-"));
      const testDir = mkdtempSync(join(tmpdir(), "paddock-broker-upstream-"));
      dirs.push(dataDir, testDir);
      const ca = await BrokerCa.loadOrCreate(dataDir, "test");
      const testCa = await BrokerCa.loadOrCreate(testDir, "upstream test");
      const seen: Seen[] = [];
      // One upstream for both names, with a certificate valid for each.
      const api = await testCa.issue("api.fake.test");
      const other = await testCa.issue("other.fake.test");
      const server: Server = createHttpsServer(
        { key: api.keyPem, cert: api.certPem },
        (req, res) => {
          seen.push({ host: req.headers.host ?? "", path: req.url ?? "", headers: req.headers });
          res.writeHead(200, { "content-type": "text/plain" }).end(`upstream saw ${req.url}\n`);
        },
      );
      server.addContext("other.fake.test", { key: other.keyPem, cert: other.certPem });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      const port = (server.address() as AddressInfo).port;
      const brokered: World["brokered"] = [];
      const logs: string[] = [];
      const secret: BrokeredSecret = { name: "API_KEY", value: REAL, rule: { host: "api.fake.test", port, pathPrefix: "/v1/", header: "x-api-key", template: "{value}", basicUsername: "" } };
      const proxy = new EgressProxy({
        host: "127.0.0.1",
        port: 0,
        key: randomBytes(32),
        policyFor: (runId) => (runId === RUN ? { access: "custom", allowedDomains: [`api.fake.test:${port}`, `other.fake.test:${port}`], includeTrusted: false } : null),
        hostMap: { "api.fake.test": "127.0.0.1", "other.fake.test": "127.0.0.1" },
        resolve: async (name) => Promise.reject(new Error(`no DNS in tests: ${name}`)),
        audit: () => undefined,
        log: (msg, fields) => logs.push(`${msg} ${JSON.stringify(fields ?? {})}`),
        ca,
        upstreamCa: upstreamCa ? testCa.certPem : undefined,
        brokersFor: (runId, stage) => {
          if (broken) throw new Error("sealed secret: unable to authenticate data");
          return runId === RUN && stage === "agent" ? [secret] : [];
        },
        auditBrokered: (runId, host, p, name) => brokered.push([runId, host, p, name]),
      });
      await proxy.start();
      const url = new URL(proxy.urlFor(RUN, "agent"));
      const auth = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString("base64")}`;
      closers.push(async () => {
        await proxy.stop();
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
      });
      return { proxy, ca, testCa, port, seen, brokered, logs, auth };
    });
    for (const close of closers) await close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  },
});

/** CONNECT through the proxy, then TLS to `servername`, trusting only `ca`. */
async function tunnel(w: World, host: string, o: { servername?: string; ca: string }): Promise<TLSSocket> {
  const raw = await new Promise<Socket>((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port: w.proxy.port, method: "CONNECT", path: `${host}:${w.port}`, headers: { "proxy-authorization": w.auth } });
    req.once("connect", (res, socket) => (res.statusCode === 200 ? resolve(socket) : reject(new Error(`CONNECT ${res.statusCode}`))));
    req.once("error", reject);
    req.end();
  });
  return new Promise<TLSSocket>((resolve, reject) => {
    const tls = tlsConnect({ socket: raw, servername: o.servername ?? host, ca: o.ca }, () => resolve(tls));
    tls.once("error", reject);
  });
}

/** One HTTP/1.1 request on a TLS socket; the raw response text. */
function send(tls: TLSSocket, head: string): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    tls.on("data", (d: Buffer) => (text += d.toString("utf8")));
    tls.once("end", () => resolve(text));
    tls.once("close", () => resolve(text));
    tls.write(`${head}\r\nconnection: close\r\n\r\n`);
  });
}

describe("brokered secrets in the egress proxy", () => {
  test("a brokered destination gets the real value in place of the placeholder; the sandbox's side never sees it", async ({ world }) => {
    const w = await world();
    const tls = await tunnel(w, "api.fake.test", { ca: w.ca.certPem });
    // The sandbox was shown a certificate of the proxy's CA, for exactly this name, short-lived.
    const leaf = new X509Certificate(tls.getPeerCertificate(true).raw);
    expect(leaf.checkIssued(new X509Certificate(w.ca.certPem))).toBe(true);
    expect(leaf.subjectAltName).toBe("DNS:api.fake.test");
    expect(Date.parse(leaf.validTo) - Date.now()).toBeLessThanOrEqual(LEAF_LIFETIME_MS);
    const response = await send(tls, `GET /v1/messages HTTP/1.1\r\nhost: api.fake.test:${w.port}\r\nx-api-key: ${PLACEHOLDER}`);
    expect(response).toContain("200 OK");
    expect(response).not.toContain(REAL);
    expect(w.seen).toHaveLength(1);
    expect(w.seen[0]!.headers["x-api-key"]).toBe(REAL);
    expect(w.brokered).toEqual([[RUN, "api.fake.test", w.port, "API_KEY"]]);
    expect(w.logs.join("\n")).not.toContain(REAL);
  });

  test("outside the path prefix, on another host, or named by Host, the placeholder stays a placeholder", async ({ world }) => {
    const w = await world();
    // Another path on the brokered host: intercepted, nothing added.
    for (const path of ["/other", "/v1/../admin", "/v1%2f..%2f..%2fadmin"]) {
      const tls = await tunnel(w, "api.fake.test", { ca: w.ca.certPem });
      await send(tls, `GET ${path} HTTP/1.1\r\nhost: api.fake.test:${w.port}\r\nx-api-key: ${PLACEHOLDER}`);
    }
    // Dot segments are resolved before the prefix is checked (and the resolved path is what goes upstream).
    expect(w.seen.map((s) => [s.path, s.headers["x-api-key"]])).toEqual([
      ["/other", PLACEHOLDER],
      ["/admin", PLACEHOLDER],
      ["/v1%2f..%2f..%2fadmin", PLACEHOLDER],
    ]);

    // Another allowed host is a plain tunnel: the upstream's own certificate, the placeholder as sent.
    const before = w.seen.length;
    const plain = await tunnel(w, "other.fake.test", { ca: w.testCa.certPem });
    expect(new X509Certificate(plain.getPeerCertificate(true).raw).checkIssued(new X509Certificate(w.testCa.certPem))).toBe(true);
    await send(plain, `GET /v1/messages HTTP/1.1\r\nhost: other.fake.test:${w.port}\r\nx-api-key: ${PLACEHOLDER}`);
    expect(w.seen[before]!.headers["x-api-key"]).toBe(PLACEHOLDER);
    // The sandbox cannot get a proxy certificate for a host that is not brokered.
    await expect(tunnel(w, "other.fake.test", { ca: w.ca.certPem })).rejects.toThrow();

    // Inside the brokered connection, a Host naming another destination is refused, never forwarded.
    const count = w.seen.length;
    const tls = await tunnel(w, "api.fake.test", { ca: w.ca.certPem });
    const refused = await send(tls, `GET /v1/messages HTTP/1.1\r\nhost: other.fake.test:${w.port}\r\nx-api-key: ${PLACEHOLDER}`);
    expect(refused).toContain("400 Bad Request");
    expect(w.seen).toHaveLength(count);
    // SNI naming another host still gets the certificate of the CONNECT's host, which the client rejects.
    await expect(tunnel(w, "api.fake.test", { servername: "other.fake.test", ca: w.ca.certPem })).rejects.toThrow(/altnames|Hostname/);
  });

  test("an upstream the host does not trust gets nothing: 502, and no value in the error", async ({ world }) => {
    const w = await world({ upstreamCa: false });
    const tls = await tunnel(w, "api.fake.test", { ca: w.ca.certPem });
    const response = await send(tls, `GET /v1/messages HTTP/1.1\r\nhost: api.fake.test:${w.port}\r\nx-api-key: ${PLACEHOLDER}`);
    expect(response).toContain("502 Bad Gateway");
    expect(response).not.toContain(REAL);
    expect(w.seen).toHaveLength(0);
    expect(w.logs.join("\n")).not.toContain(REAL);
  });

  test("secrets that cannot be read refuse the connection (no tunnel in their place) and the proxy goes on", async ({ world }) => {
    const w = await world({ broken: true });
    await expect(tunnel(w, "api.fake.test", { ca: w.ca.certPem })).rejects.toThrow(/CONNECT 502/);
    await expect(tunnel(w, "api.fake.test", { ca: w.ca.certPem })).rejects.toThrow(/CONNECT 502/);
    expect(w.seen).toHaveLength(0);
  });

  test("the CA key is 0600 in the data dir and is kept across starts; leaves are cached and short-lived", async () => {
    const dir = mkdtempSync(join(tmpdir(), "paddock-broker-ca-"));
    try {
      let now = Date.now();
      const ca = await BrokerCa.loadOrCreate(dir, "test", () => now);
      expect(statSync(join(dir, CA_KEY_FILE)).mode & 0o777).toBe(0o600);
      expect(readFileSync(join(dir, CA_CERT_FILE), "utf8")).not.toContain("PRIVATE KEY");
      const again = await BrokerCa.loadOrCreate(dir, "test");
      expect(again.certPem).toBe(ca.certPem);
      const first = await ca.contextFor("api.fake.test");
      expect(await ca.contextFor("api.fake.test")).toBe(first);
      now += LEAF_LIFETIME_MS; // past the renewal point
      expect(await ca.contextFor("api.fake.test")).not.toBe(first);
      const cert = new X509Certificate(ca.certPem);
      expect(cert.ca).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
