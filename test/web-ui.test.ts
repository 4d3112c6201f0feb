import { cors } from "@connectrpc/connect";
import { execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:http";
import { connect as http2Connect } from "node:http2";
import { join, resolve } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { WEB_CSP } from "../src/api/web-ui.js";
import { loadConfig } from "../src/config.js";
import { cleanUp, freePort, spawnServe, startDaemon, tempDir, type Daemon } from "./fixtures.js";

/**
 * The web UI's files and CORS over plain HTTP, against a real daemon: content types, cache
 * headers, the CSP, compression and revalidation; preflights with Connect's header lists,
 * only for the origins --cors-origin names. And the compiled binary carries the UI inside.
 */
const ROOT = resolve(import.meta.dirname, "..");

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

function call(url: string, opts: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  return new Promise((resolveReply, reject) => {
    const req = request(url, { method: opts.method ?? "GET", headers: opts.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolveReply({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end(opts.body);
  });
}

const assetsOf = (html: string) => [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]!);

describe("the web UI's files", () => {
  let daemon: Daemon;
  beforeAll(async () => {
    execFileSync(resolve(ROOT, "node_modules", ".bin", "bun"), ["scripts/build-web.ts"], { cwd: ROOT, stdio: "pipe" });
    daemon = await startDaemon();
  });
  afterAll(async () => {
    if (daemon) await cleanUp(daemon);
  });

  test("the page: HTML with a strict CSP, revalidated every time, gzip when asked, 304 when unchanged", async () => {
    const page = await call(`${daemon.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers).toMatchObject({
      "content-type": "text/html; charset=utf-8",
      "cache-control": "no-cache",
      "content-security-policy": WEB_CSP,
      "x-content-type-options": "nosniff",
      "x-frame-options": "DENY",
    });
    expect(WEB_CSP).toMatch(/script-src 'self';/);
    expect(WEB_CSP).not.toMatch(/unsafe/);
    const html = page.body.toString();
    expect(assetsOf(html)).toHaveLength(2);
    const zipped = await call(`${daemon.url}/`, { headers: { "accept-encoding": "gzip, deflate" } });
    expect(zipped.headers["content-encoding"]).toBe("gzip");
    expect(gunzipSync(zipped.body).toString()).toBe(html);
    const again = await call(`${daemon.url}/`, { headers: { "if-none-match": String(page.headers.etag) } });
    expect(again.status).toBe(304);
    expect(again.body.length).toBe(0);
    const head = await call(`${daemon.url}/`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers["content-length"]).toBe(String(page.body.length));
    expect((await call(`${daemon.url}/`, { method: "POST" })).status).toBe(405);
  });

  test("hashed assets: their content types, kept a year, and small", async () => {
    const html = (await call(`${daemon.url}/`)).body.toString();
    let gzipped = 0;
    for (const path of assetsOf(html)) {
      const res = await call(`${daemon.url}${path}`, { headers: { "accept-encoding": "gzip" } });
      expect(res.status).toBe(200);
      expect(res.headers["content-type"]).toBe(path.endsWith(".css") ? "text/css; charset=utf-8" : "text/javascript; charset=utf-8");
      expect(res.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
      expect(res.headers["content-encoding"]).toBe("gzip");
      gzipped += res.body.length;
    }
    // No multi-megabyte bundle: the whole UI, protobuf runtime included, gzipped.
    expect(gzipped).toBeLessThan(100 * 1024);
    expect((await call(`${daemon.url}/assets/nothing-here.js`)).status).toBe(404);
    // The API and the plain endpoints beside the UI are untouched.
    expect((await call(`${daemon.url}/healthz`)).body.toString()).toBe("ok\n");
    expect((await daemon.tasks.listTasks({})).tasks).toEqual([]);
  });

  test("without --cors-origin, a preflight gets no CORS headers and the browser refuses", async () => {
    const res = await call(`${daemon.url}/paddock.v1.TaskService/ListTasks`, { method: "OPTIONS", headers: { origin: "http://127.0.0.1:1", "access-control-request-method": "POST" } });
    expect(res.headers["access-control-allow-origin"]).toBeUndefined();
    const actual = await call(`${daemon.url}/paddock.v1.TaskService/ListTasks`, {
      method: "POST",
      headers: { origin: "http://127.0.0.1:1", "content-type": "application/json", authorization: `Bearer ${daemon.adminToken}` },
      body: "{}",
    });
    expect(actual.status).toBe(200);
    expect(actual.headers["access-control-allow-origin"]).toBeUndefined();
  });
});

describe("CORS with --cors-origin", () => {
  const allowed = "http://127.0.0.1:5173";
  let daemon: Daemon;
  beforeAll(async () => {
    daemon = await startDaemon({ config: { corsOrigin: `${allowed}, https://ui.example.test` } });
  });
  afterAll(async () => {
    if (daemon) await cleanUp(daemon);
  });
  const preflight = (origin: string, method = "POST") =>
    call(`${daemon.url}/paddock.v1.TaskRunService/StreamLogs`, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": method, "access-control-request-headers": "authorization,content-type,connect-protocol-version" },
    });

  test("a preflight from an allowed origin: Connect's methods and headers, plus Authorization", async () => {
    const res = await preflight(allowed);
    expect(res.status).toBe(204);
    expect(res.headers["access-control-allow-origin"]).toBe(allowed);
    expect(String(res.headers["access-control-allow-methods"]).split(", ")).toEqual(cors.allowedMethods);
    const headers = String(res.headers["access-control-allow-headers"]).split(", ");
    expect(headers).toEqual(expect.arrayContaining([...cors.allowedHeaders, "Authorization"]));
    expect(res.headers["access-control-max-age"]).toBe("7200");
    expect(String(res.headers.vary)).toContain("Origin");
  });

  test("an actual call from an allowed origin exposes grpc-status and grpc-message; others get nothing", async () => {
    const body = "{}";
    const headers = { "content-type": "application/json", "connect-protocol-version": "1", authorization: `Bearer ${daemon.adminToken}` };
    const ok = await call(`${daemon.url}/paddock.v1.TaskService/ListTasks`, { method: "POST", headers: { ...headers, origin: "https://ui.example.test" }, body });
    expect(ok.status).toBe(200);
    expect(ok.headers["access-control-allow-origin"]).toBe("https://ui.example.test");
    expect(String(ok.headers["access-control-expose-headers"]).split(", ")).toEqual(cors.exposedHeaders);
    // An error still carries the CORS headers, so the page can read why.
    const denied = await call(`${daemon.url}/paddock.v1.TaskService/ListTasks`, { method: "POST", headers: { ...headers, authorization: "Bearer wrong", origin: allowed }, body });
    expect(denied.status).toBe(401);
    expect(denied.headers["access-control-allow-origin"]).toBe(allowed);
    const other = await call(`${daemon.url}/paddock.v1.TaskService/ListTasks`, { method: "POST", headers: { ...headers, origin: "http://127.0.0.1:5174" }, body });
    expect(other.headers["access-control-allow-origin"]).toBeUndefined();
  });

  test("a preflight from any other origin is refused", async () => {
    for (const origin of ["http://127.0.0.1:5174", "https://127.0.0.1:5173", "null", "https://evil.example.test"]) {
      const res = await preflight(origin);
      expect(res.status).toBe(403);
      expect(res.headers["access-control-allow-origin"]).toBeUndefined();
    }
  });

  test("--cors-origin '*' allows every origin", async () => {
    const any = await startDaemon({ config: { corsOrigin: "*" } });
    try {
      const res = await call(`${any.url}/paddock.v1.TaskService/ListTasks`, { method: "OPTIONS", headers: { origin: "http://anything.test", "access-control-request-method": "POST" } });
      expect(res.status).toBe(204);
      expect(res.headers["access-control-allow-origin"]).toBe("*");
    } finally {
      await cleanUp(any);
    }
  });
});

test("over TLS the page, its assets and preflights are served on HTTP/2 as browsers speak it (ALPN h2)", async () => {
  const dir = tempDir("web-tls");
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
  const d = await startDaemon({ config: { tlsCert: join(dir, "cert.pem"), tlsKey: join(dir, "key.pem"), corsOrigin: "https://ui.example.test" } });
  const session = http2Connect(d.url, { ca: readFileSync(join(dir, "cert.pem")) });
  const get = (path: string, headers: Record<string, string> = {}) =>
    new Promise<{ headers: Record<string, unknown>; body: string }>((resolveGet, reject) => {
      const stream = session.request({ ":path": path, ...headers });
      let body = "";
      let head: Record<string, unknown> = {};
      stream.on("response", (h) => (head = h));
      stream.on("data", (c: Buffer) => (body += c));
      stream.on("end", () => resolveGet({ headers: head, body }));
      stream.on("error", reject);
      stream.end();
    });
  try {
    const page = await get("/");
    expect(page.headers).toMatchObject({ ":status": 200, "content-type": "text/html; charset=utf-8", "content-security-policy": WEB_CSP });
    for (const path of assetsOf(page.body)) expect((await get(path)).headers).toMatchObject({ ":status": 200, "cache-control": "public, max-age=31536000, immutable" });
    const preflight = await get("/paddock.v1.TaskService/ListTasks", { ":method": "OPTIONS", origin: "https://ui.example.test", "access-control-request-method": "POST" });
    expect(preflight.headers).toMatchObject({ ":status": 204, "access-control-allow-origin": "https://ui.example.test" });
  } finally {
    session.close();
    await cleanUp(d);
    rmSync(dir, { recursive: true, force: true });
  }
});

describe("--cors-origin parsing", () => {
  const parse = (corsOrigin: string) => loadConfig({}, { dataDir: "/tmp/x", corsOrigin }).corsOrigin;
  test("origins as browsers spell them; paths, queries and other schemes refused", () => {
    expect(parse("")).toEqual([]);
    expect(parse("HTTPS://UI.Example.com:443/, http://127.0.0.1:5173,http://127.0.0.1:5173")).toEqual(["https://ui.example.com", "http://127.0.0.1:5173"]);
    expect(loadConfig({ PADDOCK_CORS_ORIGIN: "*" }, { dataDir: "/tmp/x" }).corsOrigin).toEqual(["*"]);
    for (const bad of ["ui.example.com", "https://ui.example.com/app", "https://x.test?a=1", "file:///tmp", "ftp://x.test"]) {
      expect(() => parse(bad)).toThrow(/--cors-origin: .* is not an origin/);
    }
  });
});

describe("dist/paddock", () => {
  let child: ChildProcess | undefined;
  let dataDir = "";
  afterAll(() => {
    child?.kill("SIGKILL");
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  test("serves the UI embedded in the binary, the same files the build made", async () => {
    if (!existsSync(resolve(ROOT, "dist/paddock"))) execFileSync("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: "inherit" });
    dataDir = tempDir("web-bin");
    const port = await freePort();
    child = await spawnServe([resolve(ROOT, "dist/paddock")], ["--data-dir", dataDir, "--listen", `127.0.0.1:${port}`, "--socket", "", "--log-format", "json"]);
    const page = await call(`http://127.0.0.1:${port}/`);
    expect(page.status).toBe(200);
    const assets = assetsOf(page.body.toString());
    expect(assets).toHaveLength(2);
    for (const path of assets) {
      const res = await call(`http://127.0.0.1:${port}${path}`);
      expect(res.status).toBe(200);
      expect(res.headers["content-type"]).toMatch(/^text\/(javascript|css)/);
      // What the build that made the binary wrote (dist/web keeps every build's hashed files).
      expect(res.body.toString()).toBe(readFileSync(join(ROOT, "dist", "web", path.slice("/assets/".length)), "utf8"));
    }
  });
});
