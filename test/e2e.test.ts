import { fromBinary, toBinary, type DescMessage, type MessageShape, create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { execFileSync, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  StreamLogsRequestSchema,
  StreamLogsResponseSchema,
  type LogEntry,
} from "../src/gen/paddock/v1/task_run_pb.js";
import { freePort, gitEnv, makeGitRepo, processesOf, sh, spawnServe, tempDir } from "./fixtures.js";

/**
 * The compiled binary, end to end: driven with `buf curl` through reflection and with a
 * @grpc/grpc-js client, killed with SIGKILL mid-stream and started again.
 */
const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "dist", "paddock");
const BUF = join(ROOT, "node_modules", ".bin", "buf");

function startBinary(dataDir: string, port: number): Promise<ChildProcess> {
  return spawnServe([BIN], ["--data-dir", dataDir, "--listen", `127.0.0.1:${port}`, "--log-format", "json"], { env: { ...gitEnv, PADDOCK_LOG_LEVEL: "info" } });
}

let token = "";

function bufCurl(url: string, method: string, body: unknown): Record<string, unknown> {
  const auth = token ? ["-H", `Authorization: Bearer ${token}`] : [];
  const out = execFileSync(BUF, ["curl", "--http2-prior-knowledge", ...auth, "--data", JSON.stringify(body), `${url}/${method}`], { encoding: "utf8" });
  return JSON.parse(out) as Record<string, unknown>;
}

/** A grpc-js client built from the generated descriptors: a second, independent gRPC stack. */
function grpcLogsClient(port: number) {
  const method = <I extends DescMessage, O extends DescMessage>(path: string, i: I, o: O) => ({
    path,
    requestStream: false,
    responseStream: true,
    requestSerialize: (m: MessageShape<I>) => Buffer.from(toBinary(i, m)),
    requestDeserialize: (b: Buffer) => fromBinary(i, b),
    responseSerialize: (m: MessageShape<O>) => Buffer.from(toBinary(o, m)),
    responseDeserialize: (b: Buffer) => fromBinary(o, b),
  });
  const Client = grpc.makeGenericClientConstructor(
    { streamLogs: method("/paddock.v1.TaskRunService/StreamLogs", StreamLogsRequestSchema, StreamLogsResponseSchema) },
    "TaskRunService",
  );
  return new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

/** Follows the run's log with grpc-js from afterSeq; stops at the end or when the connection drops. */
function followWithGrpc(port: number, runId: string, afterSeq: bigint, onLine: (l: LogEntry) => void): Promise<"ended" | "dropped"> {
  const client = grpcLogsClient(port);
  return new Promise((done) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${token}`);
    const call = client.streamLogs!(create(StreamLogsRequestSchema, { runId, afterSeq, follow: true }), metadata);
    call.on("data", (res: MessageShape<typeof StreamLogsResponseSchema>) => res.entries.forEach(onLine));
    call.on("end", () => {
      client.close();
      done("ended");
    });
    call.on("error", () => {
      client.close();
      done("dropped");
    });
  });
}

describe("dist/paddock end to end", () => {
  let repo: string;
  let dataDir: string;
  let daemon: ChildProcess | undefined;

  beforeAll(() => {
    if (!existsSync(BIN)) execFileSync("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: "inherit" });
    repo = makeGitRepo();
    dataDir = tempDir("e2e");
  });
  afterAll(() => {
    if (daemon?.exitCode === null) daemon.kill("SIGTERM");
    rmSync(repo, { recursive: true, force: true });
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("runs a task through buf curl and grpc-js, survives SIGKILL mid-stream, and loses or doubles no line", async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    daemon = await startBinary(dataDir, port);

    const methods = execFileSync(BUF, ["curl", "--http2-prior-knowledge", "--list-methods", url], { encoding: "utf8" });
    expect(methods).toContain("paddock.v1.TaskRunService/StreamLogs");
    expect(methods).toContain("grpc.health.v1.Health/Check");
    expect(bufCurl(url, "grpc.health.v1.Health/Check", {})).toEqual({ status: "SERVING" });
    // Without a token the API refuses; health and reflection above needed none.
    expect(() => bufCurl(url, "paddock.v1.TaskService/ListTasks", {})).toThrow(/unauthenticated/);
    token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();

    const { task } = bufCurl(url, "paddock.v1.TaskService/CreateTask", { title: "count and commit", description: "print lines, then commit", repository: repo, origin: "e2e" }) as { task: { id: string; taskNumber: string } };
    expect(task.taskNumber).toBe("1");
    const script = "i=1; while [ $i -le 80 ]; do echo line-$i; i=$((i+1)); sleep 0.04; done; echo e2e > e2e.txt; git add e2e.txt; git -c user.name=a -c user.email=a@x commit -qm e2e";
    const { run } = bufCurl(url, "paddock.v1.TaskRunService/StartRun", { taskId: task.id, agentCommand: ["sh", "-c", script] }) as { run: { id: string } };

    const seen: LogEntry[] = [];
    let killed = false;
    const first = followWithGrpc(port, run.id, 0n, (l) => {
      seen.push(l);
      if (!killed && l.text === "line-20") {
        killed = true;
        daemon!.kill("SIGKILL");
      }
    });
    expect(await first).toBe("dropped");
    await new Promise((r) => daemon!.exitCode !== null || daemon!.signalCode ? r(null) : daemon!.once("exit", r));

    daemon = await startBinary(dataDir, port);
    const resumeAt = seen[seen.length - 1]!.seq;
    expect(await followWithGrpc(port, run.id, resumeAt, (l) => seen.push(l))).toBe("ended");

    const lines = seen.filter((l) => l.stream === "stdout").map((l) => l.text);
    expect(lines).toEqual(Array.from({ length: 80 }, (_, i) => `line-${i + 1}`));
    expect(seen.map((l) => Number(l.seq))).toEqual(seen.map((_, i) => i + 1));

    const got = bufCurl(url, "paddock.v1.TaskRunService/GetRun", { runId: run.id }) as { run: { status: string; phase: string; cleanedAt?: string; resultBranch: string; resultCommit: string } };
    expect(got.run).toMatchObject({ status: "RUN_STATUS_COMPLETED", phase: "cleaned" });
    expect(got.run.cleanedAt).toBeDefined();
    expect(sh(repo, "git", "show", `${got.run.resultBranch}:e2e.txt`)).toBe("e2e");
    expect(processesOf([run.id])).toEqual([]);
    expect(readdirSync(join(dataDir, "sandboxes"))).toEqual([]);

    // The CLI of the same binary, over the unix socket, agrees.
    const cli = execFileSync(BIN, ["run", "get", run.id, "--json"], { env: { ...gitEnv, PADDOCK_DATA_DIR: dataDir }, encoding: "utf8" });
    expect(JSON.parse(cli)).toMatchObject({ id: run.id, status: "RUN_STATUS_COMPLETED", phase: "cleaned" });
    // Its output piped into a reader that is gone (`| head`, here `| true`): a quiet end, no stack trace.
    for (const args of [["logs", run.id], ["run", "list"]]) {
      const piped = spawnSync("bash", ["-c", '"$0" "$@" | true; exit "${PIPESTATUS[0]}"', BIN, ...args], { env: { ...gitEnv, PADDOCK_DATA_DIR: dataDir }, encoding: "utf8" });
      expect({ args, status: piped.status, stderr: piped.stderr }).toEqual({ args, status: 0, stderr: "" });
    }

    daemon.kill("SIGTERM");
    const code = await new Promise((r) => daemon!.once("exit", (c) => r(c)));
    expect(code).toBe(0);
  });
});
