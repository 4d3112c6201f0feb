import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskService } from "../src/gen/paddock/v1/task_pb.js";
import { GetRunRequestSchema, GetRunResponseSchema, RunStatus, TaskRunService } from "../src/gen/paddock/v1/task_run_pb.js";
import { bearer, cleanUp, freePort, gitEnv, makeGitRepo, processesOf, removeLocalWork, spawnServe, startDaemon, tempDir } from "./fixtures.js";

/** The daemon from source, as `paddock serve` runs it: signals and exit are the point here. */
const ROOT = resolve(import.meta.dirname, "..");
const PADDOCK = [process.execPath, "--import", "tsx", join(ROOT, "src", "main.ts")];
/** The CLI that follows across the restart: the sources under Node, or PADDOCK_TEST_CLI (e.g. dist/paddock, which talks over Bun's fetch). */
const CLI = process.env.PADDOCK_TEST_CLI ? [resolve(ROOT, process.env.PADDOCK_TEST_CLI)] : PADDOCK;
const LINES = 120;

function serve(dataDir: string, port: number): Promise<ChildProcess> {
  return spawnServe(PADDOCK, ["--data-dir", dataDir, "--listen", `127.0.0.1:${port}`, "--log-format", "json", "--grace-time", "1s"], { cwd: ROOT });
}

/** Resolves with the exit code; rejects if the process is still there after `limitMs`. */
function exited(child: ChildProcess, limitMs: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode) return Promise.resolve(child.exitCode);
  return new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`process ${child.pid} still running after ${limitMs} ms`)), limitMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      done(code);
    });
  });
}

/** Follows the run's log until the stream ends; returns how it ended. */
async function follow(client: Client<typeof TaskRunService>, runId: string, seen: string[]): Promise<ConnectError | "ended"> {
  try {
    for await (const res of client.streamLogs({ runId, follow: true }, { timeoutMs: 0 })) for (const l of res.entries) seen.push(l.text);
    return "ended";
  } catch (error) {
    return ConnectError.from(error);
  }
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 600 && !cond(); i++) await new Promise((r) => setTimeout(r, 50));
  if (!cond()) throw new Error(`timed out waiting for ${what}`);
}

describe("graceful shutdown", () => {
  let repo = "";
  let dataDir = "";
  let runId = "";
  let daemon: ChildProcess | undefined;
  let cli: ChildProcess | undefined;
  let events: ChildProcess | undefined;
  beforeAll(() => {
    repo = makeGitRepo();
    dataDir = tempDir("shutdown");
  });
  afterAll(async () => {
    cli?.kill("SIGKILL");
    events?.kill("SIGKILL");
    if (daemon && daemon.exitCode === null) {
      daemon.kill("SIGTERM");
      await exited(daemon, 30_000).catch(() => daemon!.kill("SIGKILL"));
    }
    // A failed test may leave the run's runner waiting for a daemon that is gone.
    if (runId) for (const p of processesOf([runId])) process.kill(Number(p.split(" ")[0]), "SIGKILL");
    removeLocalWork(dataDir);
    rmSync(repo, { recursive: true, force: true });
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("ends open streams with UNAVAILABLE on every protocol, exits, and logs -f (TCP) and events -f (unix socket) resume across the restart", async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    daemon = await serve(dataDir, port);
    const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
    const interceptors = [bearer(token)];
    const transports: Record<string, Transport> = {
      grpc: createGrpcTransport({ baseUrl: url, interceptors }),
      connect: createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors }),
      "grpc-web": createGrpcWebTransport({ baseUrl: url, httpVersion: "1.1", interceptors }),
    };
    const tasks = createClient(TaskService, transports.connect!);
    const runs = createClient(TaskRunService, transports.connect!);
    const { task } = await tasks.createTask({ title: "long", repository: repo });
    const script = `i=1; while [ $i -le ${LINES} ]; do echo line-$i; i=$((i+1)); sleep 0.05; done`;
    const { run } = await runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", script], provider: "local" });
    runId = run!.id;

    // `paddock logs -f` over TCP, started before the SIGTERM; it must ride out the restart.
    let cliOut = "";
    let cliErr = "";
    cli = spawn(CLI[0]!, [...CLI.slice(1), "logs", "-f", runId], {
      cwd: ROOT,
      env: { ...gitEnv, PADDOCK_ADDRESS: url, PADDOCK_TOKEN: token },
      stdio: ["ignore", "pipe", "pipe"],
    });
    cli.stdout!.on("data", (d: Buffer) => (cliOut += d));
    cli.stderr!.on("data", (d: Buffer) => (cliErr += d));
    const cliExit = exited(cli, 120_000);
    // `paddock events -f` over the daemon's unix socket, which is gone while it restarts.
    let eventsOut = "";
    events = spawn(CLI[0]!, [...CLI.slice(1), "events", "-f", runId], {
      cwd: ROOT,
      env: { ...gitEnv, PADDOCK_DATA_DIR: dataDir },
      stdio: ["ignore", "pipe", "inherit"],
    });
    events.stdout!.on("data", (d: Buffer) => (eventsOut += d));
    const eventsExit = exited(events, 120_000);

    const seen: Record<string, string[]> = {};
    const ends = Object.entries(transports).map(([name, t]) => follow(createClient(TaskRunService, t), runId, (seen[name] = [])));
    await until(() => Object.values(seen).every((s) => s.includes("line-5")) && cliOut.includes("line-5") && eventsOut.includes("line-5"), "every follower to see line-5");

    daemon.kill("SIGTERM");
    for (const [i, end] of (await Promise.all(ends)).entries()) {
      const name = Object.keys(transports)[i];
      expect(end, name).toBeInstanceOf(ConnectError);
      expect({ name, code: (end as ConnectError).code, message: (end as ConnectError).rawMessage }).toEqual({
        name,
        code: Code.Unavailable,
        message: "the daemon is shutting down; reconnect with after_seq",
      });
    }
    expect(await exited(daemon, 30_000)).toBe(0);

    daemon = await serve(dataDir, port);
    expect(await cliExit, cliErr).toBe(0);
    // Every log line (the agent's and the daemon's own) once, in order, none missing.
    const printed = cliOut.split("\n").filter((l) => l.trim());
    expect(printed.map((l) => Number(l.trim().split(/\s+/)[0]))).toEqual(printed.map((_, i) => i + 1));
    const agentLines = printed.map((l) => l.trim().split(/\s+/).slice(1).join(" ")).filter((t) => t.startsWith("line-"));
    expect(agentLines).toEqual(Array.from({ length: LINES }, (_, i) => `line-${i + 1}`));
    expect(cliErr).toContain("reconnecting");
    expect(await eventsExit).toBe(0);
    expect(eventsOut).toBe(cliOut);
    const { run: after } = await runs.getRun({ runId });
    expect(after!.status).toBe(RunStatus.COMPLETED);
    for await (const res of runs.watchRun({ runId }, { timeoutMs: 60_000 })) if (res.run!.phase === "cleaned") break;
  }, 180_000);
});

/** A @grpc/grpc-js client for GetRun: it decodes grpc-message with decodeURI, as the spec allows. */
function grpcJsGetRun(port: number) {
  const method = <I extends DescMessage, O extends DescMessage>(path: string, i: I, o: O) => ({
    path,
    requestStream: false,
    responseStream: false,
    requestSerialize: (m: MessageShape<I>) => Buffer.from(toBinary(i, m)),
    requestDeserialize: (b: Buffer) => fromBinary(i, b),
    responseSerialize: (m: MessageShape<O>) => Buffer.from(toBinary(o, m)),
    responseDeserialize: (b: Buffer) => fromBinary(o, b),
  });
  const Client = grpc.makeGenericClientConstructor({ getRun: method("/paddock.v1.TaskRunService/GetRun", GetRunRequestSchema, GetRunResponseSchema) }, "TaskRunService");
  return new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

describe("grpc-message", () => {
  it("reaches a @grpc/grpc-js client as written: colons, percent signs and non-ASCII intact", async () => {
    const d = await startDaemon();
    const client = grpcJsGetRun(d.listener.port);
    try {
      const call = (runId: string) =>
        new Promise<grpc.ServiceError>((done, fail) => {
          const metadata = new grpc.Metadata();
          metadata.set("authorization", `Bearer ${d.adminToken}`);
          client.getRun!(create(GetRunRequestSchema, { runId }), metadata, (err: grpc.ServiceError | null) => (err ? done(err) : fail(new Error("GetRun succeeded"))));
        });
      const missing = await call("");
      expect({ code: missing.code, details: missing.details }).toEqual({ code: grpc.status.INVALID_ARGUMENT, details: "run_id: is required" });
      const odd = await call("50%/ü:x");
      expect({ code: odd.code, details: odd.details }).toEqual({ code: grpc.status.NOT_FOUND, details: 'run "50%/ü:x" not found' });
      // Connect's own gRPC client decodes the same header the same way.
      const ce = await d.grpcRuns.getRun({ runId: "50%/ü:x" }).catch((e: unknown) => ConnectError.from(e));
      expect(ce).toMatchObject({ code: Code.NotFound, rawMessage: 'run "50%/ü:x" not found' });
    } finally {
      client.close();
      await cleanUp(d);
    }
  });
});
