import { create, toBinary } from "@bufbuild/protobuf";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, test } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "../src/gen/grpc/health/v1/health_pb.js";
import { TaskService } from "../src/gen/paddock/v1/task_pb.js";
import { WatchRunRequestSchema } from "../src/gen/paddock/v1/task_run_pb.js";
import type { ConfigInput } from "../src/config.js";
import { bearer, cleanUp, failureOf, makeGitRepo, startDaemon, type Daemon } from "./fixtures.js";
import { rmSync } from "node:fs";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function daemonWith(config: ConfigInput): Promise<Daemon> {
  const d = await startDaemon({ config });
  cleanups.push(() => cleanUp(d));
  return d;
}

interface Held {
  sockets: net.Socket[];
  /** Sockets the daemon has closed (we close none until the test ends). */
  closed: () => number;
}

/** Opens `n` TCP connections that never send a byte, a hundred at a time. */
async function holdIdle(port: number, n: number, localAddress = "127.0.0.1"): Promise<Held> {
  const sockets: net.Socket[] = [];
  let closed = 0;
  cleanups.push(() => sockets.forEach((s) => s.destroy()));
  for (let i = 0; i < n; i += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, n - i) }, () => {
        const s = net.connect({ port, host: "127.0.0.1", localAddress });
        sockets.push(s);
        s.on("error", () => undefined);
        s.once("close", () => closed++);
        return new Promise<void>((r) => {
          s.once("connect", () => r());
          s.once("close", () => r());
        });
      }),
    );
  }
  return { sockets, closed: () => closed };
}

/** Polls until `cond` holds; fails after `ms` with `what`. */
async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(50);
  }
}

/** A health check over a connection of its own, as a load balancer makes it. */
async function health(d: Daemon): Promise<string> {
  const client = createClient(Health, createGrpcTransport({ baseUrl: d.url }));
  const res = await client.check({}, { timeoutMs: 10_000 });
  return HealthCheckResponse_ServingStatus[res.status];
}

/** ListTasks over a fresh HTTP/1.1 connection, optionally from another loopback address. */
function listTasks(d: Daemon, localAddress?: string) {
  const agent = new http.Agent({ keepAlive: false });
  cleanups.push(() => agent.destroy());
  const transport = createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(d.adminToken)], nodeOptions: { agent, localAddress } });
  return createClient(TaskService, transport).listTasks({}, { timeoutMs: 10_000 });
}

describe("connections on the TCP port", () => {
  test("past the caps, a flood gets nothing but health checks, and other addresses still get in", async () => {
    const d = await daemonWith({ maxConnections: 300, maxConnectionsPerAddress: 200, idleTimeout: "5m", headersTimeout: "5m" });
    const flood = await holdIdle(d.listener.port, 400);
    // 200 from this address are held; the reserve churns through the others, oldest out.
    await until(() => flood.closed() >= 400 - 200 - 10, 20_000, "the connections past the cap are closed");
    expect(flood.sockets.length - flood.closed()).toBeLessThanOrEqual(200 + 10);

    expect(await health(d)).toBe("SERVING");
    const refused = await failureOf(listTasks(d));
    expect(refused.code).toBe(Code.Unavailable);
    // Another address has room under the total cap.
    await expect(listTasks(d, "127.0.0.2")).resolves.toBeDefined();

    const more = await holdIdle(d.listener.port, 150, "127.0.0.3");
    await until(() => more.closed() >= 150 - 100 - 10, 20_000, "the total cap is reached");
    expect(await health(d)).toBe("SERVING");
    expect((await failureOf(listTasks(d, "127.0.0.4"))).code).toBe(Code.Unavailable);

    // The unix socket is not capped.
    const unix = createClient(TaskService, createConnectTransport({ baseUrl: "http://localhost", httpVersion: "1.1", nodeOptions: { socketPath: d.listener.socketPath } }));
    await expect(unix.listTasks({})).resolves.toBeDefined();

    flood.sockets.forEach((s) => s.destroy());
    more.sockets.forEach((s) => s.destroy());
    await until(async () => !!(await listTasks(d).catch(() => undefined)), 20_000, "ListTasks works again");
  });

  test("idle connections are closed after the idle timeout while health answers; HTTP/1.1 and HTTP/2 alike", async () => {
    const d = await daemonWith({ idleTimeout: "2s", headersTimeout: "2s", maxConnections: 5000, maxConnectionsPerAddress: 5000 });
    const silent = await holdIdle(d.listener.port, 5000); // the flood the issue measured
    expect(await health(d)).toBe("SERVING");

    // A keep-alive HTTP/1.1 connection and an HTTP/2 session, each idle after one request.
    const h1Closed = new Promise<void>((resolve) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      cleanups.push(() => agent.destroy());
      http.get(`${d.url}/nothing-here`, { agent }, (res) => {
        res.resume();
        res.socket.once("close", () => resolve());
      });
    });
    const session = http2.connect(d.url);
    cleanups.push(() => void session.destroy());
    const h2Closed = new Promise<void>((resolve) => session.once("close", () => resolve()));
    await new Promise<void>((resolve) => session.request({ ":path": "/nothing-here" }).on("response", () => resolve()).resume().end());

    await until(() => silent.closed() === silent.sockets.length, 30_000, "every silent connection is closed");
    await Promise.all([h1Closed, h2Closed]);
    expect(await health(d)).toBe("SERVING");
  });

  test("streams outlive the idle timeout, and HTTP/2 ones are kept alive with pings", async () => {
    const d = await daemonWith({ idleTimeout: "1s", headersTimeout: "1s", keepaliveInterval: "300ms" });
    const repo = makeGitRepo();
    cleanups.push(() => rmSync(repo, { recursive: true, force: true }));
    const { task } = await d.tasks.createTask({ title: "quiet", repository: repo });
    const { run } = await d.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", "echo first; sleep 4; echo second"] });

    // A raw HTTP/2 client following the run, to see the daemon's PING frames.
    const session = http2.connect(d.url);
    cleanups.push(() => void session.destroy());
    let pings = 0;
    session.on("ping", () => pings++);
    const body = Buffer.from(toBinary(WatchRunRequestSchema, create(WatchRunRequestSchema, { runId: run!.id })));
    const header = Buffer.alloc(5);
    header.writeUInt32BE(body.length, 1);
    const watch = session.request({ ":method": "POST", ":path": "/paddock.v1.TaskRunService/WatchRun", "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${d.adminToken}` });
    watch.end(Buffer.concat([header, body]));
    watch.resume();
    const watched = new Promise<string>((resolve) => watch.once("trailers", (t) => resolve(String(t["grpc-status"]))));

    const follow = async (client: Daemon["runs"]) => {
      const texts: string[] = [];
      for await (const res of client.streamLogs({ runId: run!.id, follow: true }, { timeoutMs: 60_000 })) texts.push(...res.entries.map((e) => e.text));
      return texts;
    };
    const [overH1, overH2] = await Promise.all([follow(d.runs), follow(d.grpcRuns)]);
    for (const texts of [overH1, overH2]) expect(texts.filter((t) => t === "first" || t === "second")).toEqual(["first", "second"]);
    expect(await watched).toBe("0");
    expect(pings).toBeGreaterThan(0);
  });
});
