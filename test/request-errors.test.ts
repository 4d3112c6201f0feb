import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { connect } from "node:http2";
import { describe, expect } from "vitest";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { RunStatus, TaskRunService } from "../src/gen/paddock/v1/task_run_pb.js";
import { bearer, failureOf, test, type Daemon } from "./fixtures.js";

/** Words of protobuf parsers that must never reach a client. */
const PARSER_DETAIL = /parse|utf-?8|illegal|wire type|position|JSON at|unexpected token|promised/i;

function envelope(body: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt32BE(body.length, 1);
  return Buffer.concat([h, body]);
}

/** A raw gRPC call over HTTP/2: the grpc-status and grpc-message it ends with. */
async function rawGrpc(d: Daemon, path: string, body: Buffer, token = d.adminToken): Promise<{ code: number; message: string }> {
  const session = connect(d.url);
  try {
    return await new Promise((resolve, reject) => {
      const s = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc+proto", te: "trailers", authorization: `Bearer ${token}` });
      let head: Record<string, unknown> = {};
      s.on("response", (h) => (head = h));
      s.on("data", () => undefined);
      const done = (t: Record<string, unknown>) => resolve({ code: Number(t["grpc-status"]), message: decodeURIComponent(String(t["grpc-message"] ?? "")) });
      s.on("trailers", done);
      s.on("end", () => head["grpc-status"] !== undefined && done(head));
      s.on("error", reject);
      s.end(envelope(body));
    });
  } finally {
    session.close();
  }
}

/** A raw Connect unary call over HTTP/1.1. */
async function rawConnect(d: Daemon, path: string, contentType: string, body: Buffer | string, token = d.adminToken): Promise<{ status: number; code: string; message: string }> {
  const res = await fetch(`${d.url}${path}`, { method: "POST", headers: { "content-type": contentType, authorization: `Bearer ${token}` }, body });
  const j = (await res.json()) as { code: string; message: string };
  return { status: res.status, code: j.code, message: j.message };
}

/** A raw gRPC-Web call over HTTP/1.1: its status comes in a trailer frame at the end of the body. */
async function rawGrpcWeb(d: Daemon, path: string, body: Buffer): Promise<{ code: number; message: string }> {
  const res = await fetch(`${d.url}${path}`, { method: "POST", headers: { "content-type": "application/grpc-web+proto", authorization: `Bearer ${d.adminToken}` }, body: envelope(body) });
  const bytes = Buffer.from(await res.arrayBuffer());
  const fields: Record<string, string> = Object.fromEntries(res.headers.entries());
  for (let i = 0; i + 5 <= bytes.length; i += 5 + bytes.readUInt32BE(i + 1)) {
    if (bytes[i]! & 0x80) {
      for (const line of bytes.subarray(i + 5, i + 5 + bytes.readUInt32BE(i + 1)).toString().split("\r\n")) {
        const at = line.indexOf(":");
        if (at > 0) fields[line.slice(0, at).trim().toLowerCase()] = line.slice(at + 1).trim();
      }
    }
  }
  return { code: Number(fields["grpc-status"]), message: decodeURIComponent(fields["grpc-message"] ?? "") };
}

// GetRunRequest { run_id = 1 } with bytes that are not UTF-8; StreamLogsRequest has run_id = 1 too.
const INVALID_UTF8 = Buffer.from([0x0a, 0x02, 0xff, 0xfe]);
// A tag with wire type 7, which does not exist.
const BAD_TAG = Buffer.from([0x0f, 0x02, 0xff, 0xfe]);

describe("requests the daemon cannot use", () => {
  test("enum values an enum does not define answer INVALID_ARGUMENT naming the field, on every protocol", async ({ daemon }) => {
    const binary = createClient(TaskRunService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", useBinaryFormat: true, interceptors: [bearer(daemon.adminToken)] }));
    const grpcWeb = createClient(TaskRunService, createGrpcWebTransport({ baseUrl: daemon.url, httpVersion: "1.1", interceptors: [bearer(daemon.adminToken)] }));
    for (const client of [daemon.runs, daemon.grpcRuns, binary, grpcWeb]) {
      const e = await failureOf(client.listRuns({ status: 99 as RunStatus }));
      expect({ code: Code[e.code], message: e.rawMessage }).toEqual({ code: "InvalidArgument", message: expect.stringMatching(/^status: 99 is not a RunStatus \(one of RUN_STATUS_UNSPECIFIED, .*RUN_STATUS_QUEUED/) });
      const c = await failureOf(client.completeRun({ runId: "run_x", status: 42 as RunStatus }));
      expect({ code: Code[c.code], message: c.rawMessage }).toEqual({ code: "InvalidArgument", message: expect.stringMatching(/^status: 42 is not a RunStatus/) });
    }
    const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", interceptors: [bearer(daemon.adminToken)] }));
    const nested = await failureOf(envs.createEnvironment({ environment: { name: "x", networkAccess: NetworkAccess.TRUSTED, setupNetworkAccess: 7 as NetworkAccess } }));
    expect({ code: Code[nested.code], message: nested.rawMessage }).toEqual({ code: "InvalidArgument", message: expect.stringMatching(/^environment\.setup_network_access: 7 is not a NetworkAccess/) });

    // In JSON an unknown enum name would otherwise be dropped, listing every run instead of none.
    const named = await rawConnect(daemon, "/paddock.v1.TaskRunService/ListRuns", "application/json", '{"status": "RUN_STATUS_BOGUS"}');
    expect(named).toEqual({ status: 400, code: "invalid_argument", message: expect.stringMatching(/^status: "RUN_STATUS_BOGUS" is not a RunStatus/) });
    // Unknown keys stay accepted, for clients newer than the daemon.
    expect((await rawConnect(daemon, "/paddock.v1.TaskRunService/ListRuns", "application/json", '{"status": "RUN_STATUS_QUEUED", "future": 1}')).status).toBe(200);
  });

  test("bodies that do not decode answer INVALID_ARGUMENT without the parser's words", async ({ daemon }) => {
    const unary = "/paddock.v1.TaskRunService/GetRun";
    for (const body of [INVALID_UTF8, BAD_TAG]) {
      expect(await rawConnect(daemon, unary, "application/proto", body)).toEqual({ status: 400, code: "invalid_argument", message: "request body: cannot be decoded as paddock.v1.GetRunRequest" });
      expect(await rawGrpcWeb(daemon, unary, body)).toEqual({ code: Code.InvalidArgument, message: "request body: cannot be decoded as paddock.v1.GetRunRequest" });
      expect(await rawGrpc(daemon, unary, body)).toEqual({ code: Code.InvalidArgument, message: "request body: cannot be decoded as paddock.v1.GetRunRequest" });
      // A streaming method's request is parsed inside the call: the same answer.
      expect(await rawGrpc(daemon, "/paddock.v1.TaskRunService/StreamLogs", body)).toEqual({ code: Code.InvalidArgument, message: "request body: cannot be decoded as paddock.v1.StreamLogsRequest" });
    }
    const json: [string, RegExp][] = [
      ["{", /^request body: cannot be decoded as paddock\.v1\.GetRunRequest$/],
      ['{"runId": 5}', /^run_id: has a value that cannot be decoded/],
    ];
    for (const [body, message] of json) {
      const res = await rawConnect(daemon, unary, "application/json", body);
      expect(res.message).not.toMatch(PARSER_DETAIL);
      expect(res.message).toMatch(message);
    }
    const notUtf8 = await rawConnect(daemon, unary, "application/json", Buffer.concat([Buffer.from('{"runId": "'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]));
    expect(notUtf8).toEqual({ status: 400, code: "invalid_argument", message: "request body: cannot be decoded as paddock.v1.GetRunRequest" });
  });

  test("a caller without a valid token learns nothing about its body", async ({ daemon }) => {
    expect(await rawGrpc(daemon, "/paddock.v1.TaskRunService/GetRun", INVALID_UTF8, "wrong")).toMatchObject({ code: Code.Unauthenticated });
    expect(await rawConnect(daemon, "/paddock.v1.TaskRunService/ListRuns", "application/proto", Buffer.from([0x10, 99]), "wrong")).toMatchObject({ code: "unauthenticated" });
  });
});
