import type { MessageInitShape } from "@bufbuild/protobuf";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, createClient, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, test } from "vitest";
import { observeStream } from "../../test/stream-observer.js";
import { file_grpc_health_v1_health } from "../gen/grpc/health/v1/health_pb.js";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { file_paddock_v1_task } from "../gen/paddock/v1/task_pb.js";
import { file_paddock_v1_task_run } from "../gen/paddock/v1/task_run_pb.js";
import { registerReflection } from "./reflection.js";

const files = [
  file_paddock_v1_task,
  file_paddock_v1_task_run,
  v1.file_grpc_reflection_v1_reflection,
  v1alpha.file_grpc_reflection_v1alpha_reflection,
  file_grpc_health_v1_health,
];

type RequestInit = MessageInitShape<typeof v1.ServerReflectionRequestSchema>;
type Ask = RequestInit["messageRequest"];

/**
 * One open ServerReflectionInfo stream: each ask() sends a request and reads its
 * answer, so several asks prove the stream survives between them. `pulled`
 * settles once the transport asks the handler for a second response, `ended`
 * once the handler has finished (the in-memory transport pulls lazily).
 */
function openStream(version: typeof v1 | typeof v1alpha) {
  const observed = observeStream();
  const transport = createRouterTransport((router) => registerReflection(router, files), {
    router: { interceptors: [observed.interceptor] },
  });
  // v1alpha mirrors v1 field for field, so one client shape drives both.
  const client = createClient(version.ServerReflection as typeof v1.ServerReflection, transport);

  const waiting: ((req: Ask | undefined) => void)[] = [];
  const queued: (Ask | undefined)[] = [];
  const put = (req: Ask | undefined): void => {
    const waiter = waiting.shift();
    if (waiter) waiter(req);
    else queued.push(req);
  };
  const take = (): Promise<Ask | undefined> =>
    queued.length > 0 ? Promise.resolve(queued.shift()) : new Promise((resolve) => waiting.push(resolve));
  async function* requests(): AsyncGenerator<RequestInit> {
    for (let req = await take(); req; req = await take()) yield { host: "paddock.test", messageRequest: req };
  }
  const abort = new AbortController();
  const responses = client.serverReflectionInfo(requests(), { signal: abort.signal })[Symbol.asyncIterator]();

  return {
    responses,
    abort,
    pulled: observed.pulled,
    ended: observed.ended,
    async ask(req: Ask): Promise<v1.ServerReflectionResponse> {
      put(req);
      const res = await responses.next();
      if (res.done) throw new Error("stream ended early");
      return res.value;
    },
    /** Ends the request stream and returns what follows on the response stream. */
    async close(): Promise<IteratorResult<v1.ServerReflectionResponse>> {
      put(undefined);
      return responses.next();
    },
  };
}

function fileNames(res: v1.ServerReflectionResponse): string[] {
  if (res.messageResponse.case !== "fileDescriptorResponse") {
    throw new Error(`expected descriptors, got ${res.messageResponse.case}`);
  }
  return res.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b).name);
}

describe.each([
  ["v1", v1],
  ["v1alpha", v1alpha],
])("ServerReflection %s", (_, version) => {
  test("lists every registered service, reflection and health included", async () => {
    const stream = openStream(version);
    const res = await stream.ask({ case: "listServices", value: "*" });
    expect(res.validHost).toBe("paddock.test");
    expect(res.originalRequest?.messageRequest).toEqual({ case: "listServices", value: "*" });
    expect(res.messageResponse.case).toBe("listServicesResponse");
    const names = res.messageResponse.case === "listServicesResponse" ? res.messageResponse.value.service : [];
    expect(names.map((s) => s.name)).toEqual(
      expect.arrayContaining([
        "paddock.v1.TaskService",
        "paddock.v1.TaskRunService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ]),
    );
    await expect(stream.close()).resolves.toMatchObject({ done: true });
  });

  test.each(["paddock.v1.TaskRunService", "paddock.v1.TaskRunService.StartRun", "paddock.v1.LogEntry"])(
    "describes the file containing %s with its imports",
    async (symbol) => {
      const stream = openStream(version);
      const res = await stream.ask({ case: "fileContainingSymbol", value: symbol });
      const names = fileNames(res);
      expect(names[0]).toBe("paddock/v1/task_run.proto");
      expect(names).toEqual(
        expect.arrayContaining(["google/protobuf/timestamp.proto", "google/protobuf/duration.proto"]),
      );
      expect(new Set(names).size).toBe(names.length);
    },
  );

  test("reports an unknown symbol as NOT_FOUND and keeps the stream open", async () => {
    const stream = openStream(version);
    const missing = await stream.ask({ case: "fileContainingSymbol", value: "paddock.v1.Nope" });
    expect(missing.messageResponse).toMatchObject({
      case: "errorResponse",
      value: { errorCode: 5, errorMessage: expect.stringContaining("paddock.v1.Nope") },
    });
    expect(missing.originalRequest?.messageRequest.value).toBe("paddock.v1.Nope");

    const found = await stream.ask({ case: "fileByFilename", value: "paddock/v1/task.proto" });
    expect(fileNames(found)).toEqual(["paddock/v1/task.proto", "google/protobuf/timestamp.proto"]);
    await expect(stream.close()).resolves.toMatchObject({ done: true });
  });

  test("answers file lookups, including imports, and unknown files", async () => {
    const stream = openStream(version);
    const wkt = await stream.ask({ case: "fileByFilename", value: "google/protobuf/duration.proto" });
    expect(fileNames(wkt)).toEqual(["google/protobuf/duration.proto"]);
    const missing = await stream.ask({ case: "fileByFilename", value: "nope.proto" });
    expect(missing.messageResponse).toMatchObject({ case: "errorResponse", value: { errorCode: 5 } });
  });

  test("answers extension queries without extensions to offer", async () => {
    const stream = openStream(version);
    const ext = await stream.ask({
      case: "fileContainingExtension",
      value: { containingType: "paddock.v1.Task", extensionNumber: 100 },
    });
    expect(ext.messageResponse).toMatchObject({ case: "errorResponse", value: { errorCode: 5 } });
    const numbers = await stream.ask({ case: "allExtensionNumbersOfType", value: "paddock.v1.Task" });
    expect(numbers.messageResponse).toMatchObject({
      case: "allExtensionNumbersResponse",
      value: { baseTypeName: "paddock.v1.Task", extensionNumber: [] },
    });
    const unknown = await stream.ask({ case: "allExtensionNumbersOfType", value: "paddock.v1.Nope" });
    expect(unknown.messageResponse).toMatchObject({ case: "errorResponse", value: { errorCode: 5 } });
  });

  test("stops the handler when the client cancels an idle stream", async () => {
    const stream = openStream(version);
    await stream.ask({ case: "listServices", value: "" });
    const next = stream.responses.next();
    await stream.pulled; // the handler now waits for a request that never comes
    stream.abort.abort();
    await expect(next).rejects.toMatchObject({ code: Code.Canceled });
    await stream.ended;
  });
});
