import type { DescFile, DescMessage } from "@bufbuild/protobuf";
import { toBinary } from "@bufbuild/protobuf";
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { Code } from "@connectrpc/connect";
import { ServerReflection as ServerReflectionV1 } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1alpha } from "../gen/grpc/reflection/v1alpha/reflection_pb.js";

/**
 * Registers grpc.reflection.v1 and v1alpha ServerReflection, describing `files`
 * and everything they import. Services are listed only from `files` themselves:
 * an imported file's services are not served here.
 */
export function registerReflection(router: ConnectRouter, files: DescFile[]): void {
  const index = buildIndex(files);
  // v1 and v1alpha messages differ only in $typeName, so one generic handler
  // serves both; each instantiation echoes back its own request type.
  router.service(ServerReflectionV1, { serverReflectionInfo: reflectionInfo(index) });
  router.service(ServerReflectionV1alpha, { serverReflectionInfo: reflectionInfo(index) });
}

/** The request fields common to v1 and v1alpha. */
interface ReflectionRequest {
  host: string;
  messageRequest:
    | {
        case: "fileByFilename" | "fileContainingSymbol" | "allExtensionNumbersOfType" | "listServices";
        value: string;
      }
    | { case: "fileContainingExtension"; value: { containingType: string; extensionNumber: number } }
    | { case: undefined; value?: undefined };
}

/** Init shape of the response oneof, valid for both versions. */
type ReflectionAnswer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

interface ReflectionIndex {
  services: string[];
  fileByName: Map<string, DescFile>;
  fileBySymbol: Map<string, DescFile>;
  /** extendee type name → extension field number → declaring file */
  extensions: Map<string, Map<number, DescFile>>;
  /**
   * serialized FileDescriptorProto with its transitive imports, requested file first; made
   * at the first request: serializing needs descriptor.proto's descriptors, which an idle
   * daemon does without (building them costs start-up time and memory).
   */
  closures: Map<DescFile, Uint8Array[]> | null;
}

function reflectionInfo(index: ReflectionIndex) {
  return async function* <Req extends ReflectionRequest>(requests: AsyncIterable<Req>, ctx: HandlerContext) {
    for await (const request of untilAborted(requests, ctx.signal)) {
      index.closures ??= await serializeClosures(index);
      yield { validHost: request.host, originalRequest: request, messageResponse: answer(index, request) };
    }
  };
}

function answer(index: ReflectionIndex, request: ReflectionRequest): ReflectionAnswer {
  const req = request.messageRequest;
  switch (req.case) {
    case "listServices":
      return { case: "listServicesResponse", value: { service: index.services.map((name) => ({ name })) } };
    case "fileByFilename":
      return describe(index, index.fileByName.get(req.value), `file not found: ${req.value}`);
    case "fileContainingSymbol":
      return describe(index, index.fileBySymbol.get(req.value), `symbol not found: ${req.value}`);
    case "fileContainingExtension": {
      const { containingType, extensionNumber } = req.value;
      const file = index.extensions.get(containingType)?.get(extensionNumber);
      return describe(index, file, `extension not found: ${containingType} field ${extensionNumber}`);
    }
    case "allExtensionNumbersOfType": {
      // Only a known message can have extensions; an unknown name is NOT_FOUND, as in grpc-go.
      if (!index.fileBySymbol.has(req.value)) return notFound(`type not found: ${req.value}`);
      const numbers = [...(index.extensions.get(req.value)?.keys() ?? [])];
      return { case: "allExtensionNumbersResponse", value: { baseTypeName: req.value, extensionNumber: numbers } };
    }
    case undefined:
      return {
        case: "errorResponse",
        value: { errorCode: Code.InvalidArgument, errorMessage: "message_request is not set" },
      };
  }
}

function describe(index: ReflectionIndex, file: DescFile | undefined, missing: string): ReflectionAnswer {
  const closure = file && index.closures?.get(file);
  if (!closure) return notFound(missing);
  return { case: "fileDescriptorResponse", value: { fileDescriptorProto: closure } };
}

function notFound(message: string): ReflectionAnswer {
  // Connect codes share gRPC's numbering, so Code.NotFound is the wire value 5.
  return { case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage: message } };
}

function buildIndex(files: DescFile[]): ReflectionIndex {
  const index: ReflectionIndex = {
    services: [],
    fileByName: new Map(),
    fileBySymbol: new Map(),
    extensions: new Map(),
    closures: null,
  };
  for (const file of files) {
    for (const service of file.services) {
      if (!index.services.includes(service.typeName)) index.services.push(service.typeName);
    }
  }
  const all = files.flatMap(withImports);
  for (const file of all) {
    if (index.fileByName.has(file.proto.name)) continue;
    // DescFile.name drops ".proto"; clients ask for the full path.
    index.fileByName.set(file.proto.name, file);
    indexSymbols(index, file);
  }
  return index;
}

async function serializeClosures(index: ReflectionIndex): Promise<Map<DescFile, Uint8Array[]>> {
  // Not through the wkt index: the binary leaves descriptor.proto out of it (scripts/embed-descriptors.ts).
  const { FileDescriptorProtoSchema } = await import("@bufbuild/protobuf/wkt/google/protobuf/descriptor_pb.js");
  // Serialized once: files are shared by many closures and never change.
  const bytes = new Map<DescFile, Uint8Array>();
  const serialize = (file: DescFile): Uint8Array => {
    let b = bytes.get(file);
    if (!b) bytes.set(file, (b = toBinary(FileDescriptorProtoSchema, file.proto)));
    return b;
  };
  return new Map([...index.fileByName.values()].map((file) => [file, withImports(file).map(serialize)]));
}

/** `file` followed by everything it imports, transitively, each once. */
function withImports(file: DescFile): DescFile[] {
  const seen = new Set<DescFile>();
  const visit = (f: DescFile): void => {
    if (seen.has(f)) return;
    seen.add(f);
    f.dependencies.forEach(visit);
  };
  visit(file);
  return [...seen];
}

function indexSymbols(index: ReflectionIndex, file: DescFile): void {
  const add = (name: string): void => {
    if (!index.fileBySymbol.has(name)) index.fileBySymbol.set(name, file);
  };
  const addEnums = (enums: DescFile["enums"]): void => {
    for (const e of enums) {
      add(e.typeName);
      // Enum values are scoped as siblings of their enum, as in protoc.
      const scope = e.typeName.slice(0, e.typeName.length - e.name.length);
      for (const value of e.values) add(scope + value.name);
    }
  };
  const addExtensions = (extensions: DescFile["extensions"]): void => {
    for (const ext of extensions) {
      add(ext.typeName);
      const byNumber = index.extensions.get(ext.extendee.typeName) ?? new Map<number, DescFile>();
      byNumber.set(ext.number, file);
      index.extensions.set(ext.extendee.typeName, byNumber);
    }
  };
  const addMessage = (message: DescMessage): void => {
    add(message.typeName);
    for (const field of message.fields) add(`${message.typeName}.${field.name}`);
    for (const oneof of message.oneofs) add(`${message.typeName}.${oneof.name}`);
    message.nestedMessages.forEach(addMessage);
    addEnums(message.nestedEnums);
    addExtensions(message.nestedExtensions);
  };
  for (const service of file.services) {
    add(service.typeName);
    for (const method of service.methods) add(`${service.typeName}.${method.name}`);
  }
  file.messages.forEach(addMessage);
  addEnums(file.enums);
  addExtensions(file.extensions);
}

/**
 * Yields from `source` until it ends or `signal` aborts. Racing each read means an
 * idle client cannot hold the handler open after the call is cancelled.
 */
async function* untilAborted<T>(source: AsyncIterable<T>, signal: AbortSignal): AsyncGenerator<T> {
  const iterator = source[Symbol.asyncIterator]();
  let onAbort = (): void => {};
  const aborted = new Promise<IteratorReturnResult<undefined>>((resolve) => {
    onAbort = () => resolve({ done: true, value: undefined });
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    for (;;) {
      const next = await Promise.race([iterator.next(), aborted]);
      if (next.done) return;
      yield next.value;
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    // Not awaited: a generator's return() waits behind any read still pending.
    void iterator.return?.()?.catch(() => {});
  }
}
