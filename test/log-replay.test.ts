import { create, fromBinary, toBinary, type MessageShape } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import Database from "better-sqlite3";
import { join } from "node:path";
import { describe, expect } from "vitest";
import { EXIT, runClientCommand } from "../src/cli/commands.js";
import { StreamLogsRequestSchema, StreamLogsResponseSchema, TaskRunService, type LogEntry } from "../src/gen/paddock/v1/task_run_pb.js";
import { bearer, test, watchToEnd, type Daemon } from "./fixtures.js";

interface Line {
  seq: number;
  stream: string;
  text: string;
}

/** Stores lines for a run the way the daemon does, after its own (as a long-running agent's would be). */
function storeLines(d: Daemon, runId: string, texts: string[]): void {
  const db = new Database(join(d.dataDir, "paddock.db"));
  try {
    db.pragma("busy_timeout = 5000");
    const last = (db.prepare("SELECT max(seq) AS s FROM run_logs WHERE run_id = ?").get(runId) as { s: number }).s;
    const insert = db.prepare("INSERT INTO run_logs (run_id, seq, time, stream, text) VALUES (?, ?, ?, 'stdout', ?)");
    db.transaction(() => texts.forEach((t, i) => insert.run(runId, last + 1 + i, Date.now(), t)))();
  } finally {
    db.close();
  }
}

function storedLines(d: Daemon, runId: string): Line[] {
  const db = new Database(join(d.dataDir, "paddock.db"), { readonly: true });
  try {
    return db.prepare("SELECT seq, stream, text FROM run_logs WHERE run_id = ? ORDER BY seq").all(runId) as Line[];
  } finally {
    db.close();
  }
}

/** Joins pieces (continued) the way the proto describes; also counts them. */
function join_(entries: LogEntry[]): { lines: Line[]; pieces: number } {
  const lines: Line[] = [];
  let pending = "";
  let pieces = 0;
  for (const e of entries) {
    if (e.continued) {
      pending += e.text;
      pieces++;
      continue;
    }
    lines.push({ seq: Number(e.seq), stream: e.stream, text: pending + e.text });
    pending = "";
  }
  return { lines, pieces };
}

/** The index of the first line that differs, or -1: a readable failure instead of an 80 MB diff. */
function firstDifference(got: Line[], want: Line[]): number {
  for (let i = 0; i < Math.max(got.length, want.length); i++) {
    const a = got[i];
    const b = want[i];
    if (!a || !b || a.seq !== b.seq || a.stream !== b.stream || a.text !== b.text) return i;
  }
  return -1;
}

/** @grpc/grpc-js with its default 4 MiB receive limit: an independent gRPC stack. */
function readWithGrpcJs(d: Daemon, runId: string): Promise<LogEntry[]> {
  const Client = grpc.makeGenericClientConstructor(
    {
      streamLogs: {
        path: "/paddock.v1.TaskRunService/StreamLogs",
        requestStream: false,
        responseStream: true,
        requestSerialize: (m: MessageShape<typeof StreamLogsRequestSchema>) => Buffer.from(toBinary(StreamLogsRequestSchema, m)),
        requestDeserialize: (b: Buffer) => fromBinary(StreamLogsRequestSchema, b),
        responseSerialize: (m: MessageShape<typeof StreamLogsResponseSchema>) => Buffer.from(toBinary(StreamLogsResponseSchema, m)),
        responseDeserialize: (b: Buffer) => fromBinary(StreamLogsResponseSchema, b),
      },
    },
    "TaskRunService",
  );
  const client = new Client(`127.0.0.1:${d.listener.port}`, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${d.adminToken}`);
  const entries: LogEntry[] = [];
  return new Promise<LogEntry[]>((resolve, reject) => {
    const call = client.streamLogs!(create(StreamLogsRequestSchema, { runId, follow: true }), metadata);
    call.on("data", (res: MessageShape<typeof StreamLogsResponseSchema>) => entries.push(...res.entries));
    call.on("end", () => resolve(entries));
    call.on("error", reject);
  }).finally(() => client.close());
}

async function readWith(client: Daemon["runs"], runId: string): Promise<LogEntry[]> {
  const entries: LogEntry[] = [];
  for await (const res of client.streamLogs({ runId, follow: false }, { timeoutMs: 120_000 })) entries.push(...res.entries);
  return entries;
}

async function readWithCli(d: Daemon, runId: string): Promise<{ code: number; lines: Line[]; err: string }> {
  const lines: Line[] = [];
  const err: string[] = [];
  const code = await runClientCommand(["logs", runId, "--json", "--address", d.url], {
    out: (l) => {
      const j = JSON.parse(l) as { seq: string; stream: string; text?: string };
      lines.push({ seq: Number(j.seq), stream: j.stream, text: j.text ?? "" });
    },
    err: (l) => err.push(l),
    env: { PADDOCK_TOKEN: d.adminToken },
    cwd: "/",
    defaultSocket: "/nonexistent/paddock.sock",
    signal: new AbortController().signal,
  });
  return { code, lines, err: err.join("\n") };
}

describe("log replay", () => {
  test("3,000 lines of 10 KB and one 50 MB line are read whole by gRPC, Connect and the CLI", async ({ daemon, repo }) => {
    const { task } = await daemon.tasks.createTask({ title: "loud", repository: repo });
    const { run } = await daemon.runs.startRun({ taskId: task!.id, agentCommand: ["true"] });
    await watchToEnd(daemon, run!.id);

    // Multi-byte characters (2 and 4 bytes in UTF-8) so that piece boundaries fall inside them.
    const unit = "abc é 😀 ";
    const tenKb = (i: number) => `${i}:${unit.repeat(Math.ceil(10_240 / unit.length))}`.slice(0, 10_240);
    storeLines(daemon, run!.id, Array.from({ length: 3000 }, (_, i) => tenKb(i)));
    const huge = `start|${unit.repeat(Math.ceil((50 * 1024 * 1024) / Buffer.byteLength(unit)))}|end`;
    storeLines(daemon, run!.id, [huge, "after the huge line"]);
    const want = storedLines(daemon, run!.id);
    expect(want.length).toBeGreaterThan(3002);
    expect(want.some((l) => l.text === huge)).toBe(true);

    const grpcJs = join_(await readWithGrpcJs(daemon, run!.id));
    expect(grpcJs.pieces).toBeGreaterThan(40); // 50 MB in pieces of about 1 MiB
    expect(firstDifference(grpcJs.lines, want)).toBe(-1);

    expect(firstDifference(join_(await readWith(daemon.grpcRuns, run!.id)).lines, want)).toBe(-1);
    expect(firstDifference(join_(await readWith(daemon.runs, run!.id)).lines, want)).toBe(-1);
    const binary = createClient(TaskRunService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", useBinaryFormat: true, interceptors: [bearer(daemon.adminToken)] }));
    expect(firstDifference(join_(await readWith(binary, run!.id)).lines, want)).toBe(-1);

    const cli = await readWithCli(daemon, run!.id);
    expect({ code: cli.code, err: cli.err }).toEqual({ code: EXIT.ok, err: "" });
    expect(firstDifference(cli.lines, want)).toBe(-1);
    // 80 MB read four ways: about 22 s alone, three times that beside other suites on 2 cores.
  }, 180_000);
});
