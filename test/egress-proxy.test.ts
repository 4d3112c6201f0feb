import { randomBytes } from "node:crypto";
import { createServer, request, type Server } from "node:http";
import { connect, type AddressInfo, type Socket } from "node:net";
import { test as base, describe, expect, vi } from "vitest";
import type { NetworkPolicy } from "../src/sandbox/egress-policy.js";
import { EgressProxy, type EgressProxyOptions, type EgressVerdict } from "../src/sandbox/egress-proxy.js";

// A guard, not a fake: a lookup through the system resolver of anything but localhost
// would be real DNS, which tests must never cause. It fails such a lookup and records it.
const systemDns = vi.hoisted(() => ({ lookups: [] as string[] }));
vi.mock("node:dns/promises", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:dns/promises")>();
  const lookup = async (host: string) => {
    systemDns.lookups.push(host);
    if (host !== "localhost") throw new Error(`test guard: no real DNS lookup of ${host}`);
    return real.lookup(host);
  };
  return { ...real, lookup, default: { ...real, lookup } };
});

/** The only service the proxy could reach: a listener the test opened on loopback. */
interface Upstream {
  port: number;
  /** TCP connections it accepted: any at all means the proxy let something through. */
  connections: number;
  hosts: string[];
}

interface Harness {
  proxy: EgressProxy;
  audit: [runId: string, host: string, port: number, verdict: EgressVerdict][];
  /** Names the injected resolver was asked for. */
  resolved: string[];
  /** Proxy-Authorization for one run's agent stage. */
  auth(runId: string): string;
}

type ProxyOptions = { policies: Record<string, NetworkPolicy>; hostMap?: Record<string, string>; resolver?: Record<string, string> | "system" };

const custom = (...allowedDomains: string[]): NetworkPolicy => ({ access: "custom", allowedDomains, includeTrusted: false });
const full: NetworkPolicy = { access: "full", allowedDomains: [], includeTrusted: false };

const test = base.extend<{ upstream: Upstream; startProxy: (o: ProxyOptions) => Promise<Harness> }>({
  upstream: async ({}, use) => {
    const up: Upstream = { port: 0, connections: 0, hosts: [] };
    const server: Server = createServer((req, res) => {
      up.hosts.push(req.headers.host ?? "");
      res.end("hello from upstream\n");
    });
    server.on("connection", () => up.connections++);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    up.port = (server.address() as AddressInfo).port;
    await use(up);
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  },
  startProxy: async ({}, use) => {
    const started: EgressProxy[] = [];
    systemDns.lookups.length = 0;
    await use(async ({ policies, hostMap = {}, resolver = {} }) => {
      const h: Omit<Harness, "proxy" | "auth"> = { audit: [], resolved: [] };
      const resolve =
        resolver === "system"
          ? undefined
          : async (name: string) => {
              h.resolved.push(name);
              const ip = resolver[name];
              if (!ip) throw new Error(`no test address for ${name}`);
              return ip;
            };
      const opts: EgressProxyOptions = {
        host: "127.0.0.1",
        port: 0,
        key: randomBytes(32),
        policyFor: (runId) => policies[runId] ?? null,
        hostMap,
        resolve,
        audit: (runId, host, port, verdict) => h.audit.push([runId, host, port, verdict]),
        log: () => undefined,
      };
      const proxy = new EgressProxy(opts);
      await proxy.start();
      started.push(proxy);
      const auth = (runId: string) => {
        const u = new URL(proxy.urlFor(runId, "agent"));
        return `Basic ${Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString("base64")}`;
      };
      return { ...h, proxy, auth };
    });
    for (const p of started) await p.stop();
    // Whatever a test did, the system resolver saw nothing but localhost.
    expect(systemDns.lookups.filter((h) => h !== "localhost")).toEqual([]);
  },
});

/** Reads a socket until `done` says the bytes so far are enough, or it ends. */
function readUntil(socket: Socket, done: (text: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    const finish = () => {
      socket.off("data", onData);
      resolve(text);
    };
    const onData = (d: Buffer) => {
      text += d.toString("latin1");
      if (done(text)) finish();
    };
    socket.on("data", onData);
    socket.once("end", finish);
    socket.once("error", reject);
  });
}

/** CONNECT through the proxy; on 200, one HTTP request through the tunnel, whose answer is `tunnelled`. */
async function connectVia(h: Harness, auth: string | null, target: string): Promise<{ status: number; text: string; tunnelled?: string }> {
  const socket = connect(h.proxy.port, "127.0.0.1");
  try {
    socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${auth ? `Proxy-Authorization: ${auth}\r\n` : ""}\r\n`);
    const text = await readUntil(socket, (t) => t.startsWith("HTTP/1.1 200 ") && t.includes("\r\n\r\n"));
    const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1] ?? 0);
    if (status !== 200) return { status, text };
    socket.write("GET /tunnelled HTTP/1.1\r\nHost: tunnel.test\r\nConnection: close\r\n\r\n");
    return { status, text, tunnelled: await readUntil(socket, () => false) };
  } finally {
    socket.destroy();
  }
}

/** A plain-HTTP proxy request: the absolute URL in the request line, `host` as the Host header (none when null). */
function getVia(h: Harness, auth: string, url: string, host: string | null): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { "proxy-authorization": auth, connection: "close" };
    if (host !== null) headers.host = host;
    const req = request({ host: "127.0.0.1", port: h.proxy.port, path: url, headers, setHost: false, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once("error", reject);
    req.end();
  });
}

describe("egress proxy", () => {
  test("ports are part of the policy: a bare name opens 80 and 443 only, name:port opens that port; refusals are audited", async ({ upstream, startProxy }) => {
    const p = upstream.port;
    const h = await startProxy({ policies: { run_bare: custom("allowed.test"), run_port: custom(`allowed.test:${p}`) }, hostMap: { "allowed.test": "127.0.0.1" } });

    const tunnel = await connectVia(h, h.auth("run_bare"), `allowed.test:${p}`);
    expect(tunnel.status).toBe(403);
    expect(tunnel.text).toContain(`allowed.test:${p} is not allowed by the environment's network policy`);
    const plain = await getVia(h, h.auth("run_bare"), `http://allowed.test:${p}/`, `allowed.test:${p}`);
    expect(plain.status).toBe(403);
    expect(upstream.connections).toBe(0);
    expect(h.audit).toEqual([
      ["run_bare", "allowed.test", p, "refused"],
      ["run_bare", "allowed.test", p, "refused"],
    ]);

    // Listed with its port, the same destination is reachable both ways.
    expect((await connectVia(h, h.auth("run_port"), `allowed.test:${p}`)).tunnelled).toMatch(/hello from upstream/);
    expect(await getVia(h, h.auth("run_port"), `http://allowed.test:${p}/x`, `allowed.test:${p}`)).toEqual({ status: 200, body: "hello from upstream\n" });
    expect(h.audit.slice(2)).toEqual([
      ["run_port", "allowed.test", p, "allowed"],
      ["run_port", "allowed.test", p, "allowed"],
    ]);
  });

  test("plain HTTP must carry a Host that names the request's target; otherwise 400 and nothing forwarded", async ({ upstream, startProxy }) => {
    const p = upstream.port;
    const h = await startProxy({ policies: { run_a: full }, hostMap: { "allowed.test": "127.0.0.1", "other.test": "127.0.0.1" } });
    const auth = h.auth("run_a");

    for (const host of [`other.test:${p}`, "allowed.test", `allowed.test:${p + 1}`, "", null]) {
      const res = await getVia(h, auth, `http://allowed.test:${p}/`, host);
      expect(res.status, `Host: ${host}`).toBe(400);
      // Without a Host header at all, node's HTTP server answers 400 itself.
      if (host !== null) expect(res.body, `Host: ${host}`).toContain(`the Host header must name the request's target, allowed.test:${p}`);
    }
    expect(upstream.connections).toBe(0);

    // The same name after normalisation (case, trailing dot) is the same target.
    expect((await getVia(h, auth, `http://allowed.test:${p}/`, `Allowed.Test.:${p}`)).status).toBe(200);
    expect(upstream.hosts).toEqual([`Allowed.Test.:${p}`]);
  });

  test("names are normalised before the policy and the host map: a trailing dot or capitals never reach DNS", async ({ upstream, startProxy }) => {
    const p = upstream.port;
    const h = await startProxy({
      policies: { run_full: full, run_a: custom(`allowed.test:${p}`, `mapped.test:${p}`) },
      hostMap: { "allowed.test": "127.0.0.1", "Mapped.Test.": "127.0.0.1" },
    });

    // The host map sees the name as the policy does (with full access, the policy allows anything).
    expect((await connectVia(h, h.auth("run_full"), `allowed.test.:${p}`)).tunnelled).toMatch(/hello from upstream/);
    expect(await getVia(h, h.auth("run_full"), `http://allowed.test.:${p}/`, `allowed.test.:${p}`)).toMatchObject({ status: 200 });
    expect((await connectVia(h, h.auth("run_full"), `mapped.test:${p}`)).tunnelled).toMatch(/hello from upstream/);

    const auth = h.auth("run_a");
    expect((await connectVia(h, auth, `ALLOWED.test.:${p}`)).tunnelled).toMatch(/hello from upstream/);
    expect((await connectVia(h, auth, `mapped.test.:${p}`)).tunnelled).toMatch(/hello from upstream/);
    expect((await connectVia(h, auth, `other.test.:${p}`)).status).toBe(403);
    // Not names at all: refused as bad requests, never looked up.
    for (const bad of [`allowed.test..:${p}`, `allowed..test:${p}`, `allowed%2etest:${p}`, `allowed.test:${p}:1`]) {
      expect((await connectVia(h, auth, bad)).status, bad).toBe(400);
    }
    expect(h.resolved).toEqual([]);
    expect(h.audit.map(([run, host, , verdict]) => `${run} ${host} ${verdict}`)).toEqual([
      "run_full allowed.test allowed",
      "run_full allowed.test allowed",
      "run_full mapped.test allowed",
      "run_a allowed.test allowed",
      "run_a mapped.test allowed",
      "run_a other.test refused",
    ]);
  });

  test("destinations that resolve to loopback, private or link-local addresses are refused unless the operator maps them", async ({ upstream, startProxy }) => {
    const p = upstream.port;
    const h = await startProxy({
      policies: { run_full: full },
      resolver: { "loop.test": "127.0.0.1", "internal.test": "10.1.2.3", "cgnat.test": "100.64.1.1", "metadata.test": "169.254.169.254", "v6.test": "::1", "ula.test": "fd00::1", "mapped.test": "::ffff:127.0.0.1" },
    });
    const auth = h.auth("run_full");
    const refusals: [target: string, message: RegExp][] = [
      [`loop.test:${p}`, /loop\.test resolves to a loopback address, which sandboxes may not reach/],
      [`internal.test:${p}`, /resolves to a private address/],
      [`cgnat.test:${p}`, /resolves to a private address/],
      [`metadata.test:80`, /resolves to a link-local address/],
      [`v6.test:${p}`, /resolves to a loopback address/],
      [`ula.test:${p}`, /resolves to a private address/],
      [`mapped.test:${p}`, /resolves to a loopback address/],
      // IP literals: only loopback ones here, so that no test can send traffic elsewhere.
      [`127.0.0.1:${p}`, /127\.0\.0\.1 is a loopback address/],
      [`127.1:${p}`, /127\.0\.0\.1 is a loopback address/],
      [`[::1]:${p}`, /::1 is a loopback address/],
      [`[::ffff:127.0.0.1]:${p}`, /is a loopback address/],
    ];
    for (const [target, message] of refusals) {
      const res = await connectVia(h, auth, target);
      expect(res.status, target).toBe(403);
      expect(res.text, target).toMatch(message);
      expect(res.text, target).toContain("--egress-host-map");
    }
    expect((await getVia(h, auth, `http://127.0.0.1:${p}/`, `127.0.0.1:${p}`)).status).toBe(403);
    expect((await getVia(h, auth, `http://loop.test:${p}/`, `loop.test:${p}`)).status).toBe(403);
    expect(upstream.connections).toBe(0);
    expect(h.audit.every(([, , , verdict]) => verdict === "refused")).toBe(true);
    expect(h.audit).toHaveLength(refusals.length + 2);

    // The host map is the operator's word: a mapped name reaches the loopback listener.
    const mapped = await startProxy({ policies: { run_full: full }, hostMap: { "loop.test": "127.0.0.1" } });
    expect((await connectVia(mapped, mapped.auth("run_full"), `loop.test:${p}`)).tunnelled).toMatch(/hello from upstream/);
    expect(mapped.resolved).toEqual([]);
  });

  test("the system resolver's answer is checked too: localhost is refused", async ({ upstream, startProxy }) => {
    const h = await startProxy({ policies: { run_a: full }, resolver: "system" });
    const res = await connectVia(h, h.auth("run_a"), `localhost:${upstream.port}`);
    expect(res.status).toBe(403);
    expect(res.text).toContain("localhost resolves to a loopback address");
    expect(upstream.connections).toBe(0);
    expect(systemDns.lookups).toEqual(["localhost"]);
    expect(h.audit).toEqual([["run_a", "localhost", upstream.port, "refused"]]);
  });

  test("names the policy refuses are refused before any lookup, and unauthenticated requests learn nothing", async ({ upstream, startProxy }) => {
    const p = upstream.port;
    const h = await startProxy({ policies: { run_a: custom(`allowed.test:${p}`) }, resolver: { "blocked.test": "127.0.0.1" } });
    expect((await connectVia(h, h.auth("run_a"), `blocked.test:${p}`)).status).toBe(403);
    expect((await getVia(h, h.auth("run_a"), `http://blocked.test:${p}/`, `blocked.test:${p}`)).status).toBe(403);
    expect((await connectVia(h, null, `allowed.test:${p}`)).status).toBe(407);
    expect((await connectVia(h, h.auth("run_unknown"), `allowed.test:${p}`)).status).toBe(407);
    expect(h.resolved).toEqual([]);
    expect(upstream.connections).toBe(0);
    expect(h.audit).toEqual([
      ["run_a", "blocked.test", p, "refused"],
      ["run_a", "blocked.test", p, "refused"],
    ]);
  });
});
