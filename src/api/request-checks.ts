import { fromBinary, fromJsonString, type DescEnum, type DescMessage, type Message } from "@bufbuild/protobuf";
import { isFieldError, reflect, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import { Code, ConnectError, createContextKey, createContextValues, type ConnectRouter, type Interceptor } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerRequest } from "@connectrpc/connect/protocol";
import { InvalidArgumentError } from "../errors.js";

/**
 * Requests that cannot be decoded, and enum fields with values the enum does not define,
 * answer INVALID_ARGUMENT naming the field — never INTERNAL, and never with the parser's
 * own words (connect-es reports a bad binary body as INTERNAL "parse binary: …").
 */

/** Why a unary request's body could not be decoded; set before the call, thrown inside it. */
const kUndecodable = createContextKey<InvalidArgumentError | undefined>(undefined, { description: "undecodable request body" });

/**
 * Wraps the router's unary handlers so that each decodes its request body itself first.
 * connect-es parses a unary body before any interceptor runs, so its errors cannot be
 * mapped there: a body that fails here is replaced by an empty message of the same
 * format, and requestChecks() throws the error inside the call, where the protocol's
 * own error encoding (Connect, gRPC, gRPC-Web) applies. Call after registering services.
 */
export function decodeUnaryBodiesFirst(router: ConnectRouter, readMaxBytes: number): void {
  router.handlers.forEach((h, i) => {
    if (h.method.methodKind === "unary") router.handlers[i] = Object.assign(predecoding(h, readMaxBytes), h);
  });
}

/** The interceptor half: reports undecodable bodies and undefined enum values. */
export function requestChecks(): Interceptor {
  return (next) => async (req) => {
    const undecodable = req.contextValues.get(kUndecodable);
    if (undecodable) throw undecodable;
    if (!req.stream) {
      checkEnums(req.method.input, req.message);
      return next(req);
    }
    const input = req.message;
    const typeName = req.method.input.typeName;
    const message = (async function* () {
      try {
        for await (const m of input) {
          checkEnums(req.method.input, m);
          yield m;
        }
      } catch (error) {
        // Streamed messages are parsed as they are read, inside the call.
        const ce = error instanceof ConnectError ? error : undefined;
        if (ce && (ce.code === Code.Internal || ce.code === Code.InvalidArgument)) throw decodeError(typeName, ce);
        throw error;
      }
    })();
    return next({ ...req, message });
  };
}

function checkEnums(desc: DescMessage, message: Message): void {
  const bad = undefinedEnumValue(reflect(desc, message), "");
  if (bad) throw new InvalidArgumentError(bad.path, `${bad.value} is not a ${bad.enum.name} (one of ${bad.enum.values.map((v) => v.name).join(", ")})`);
}

/** The first enum field, at any depth, holding a number its enum does not define. */
function undefinedEnumValue(m: ReflectMessage, prefix: string): { path: string; value: number; enum: DescEnum } | undefined {
  for (const f of m.fields) {
    if (!m.isSet(f)) continue;
    const path = prefix + f.name;
    const defined = (e: DescEnum, v: number) => e.values.some((x) => x.number === v);
    switch (f.fieldKind) {
      case "enum": {
        const v = m.get(f);
        if (!defined(f.enum, v)) return { path, value: v, enum: f.enum };
        break;
      }
      case "message": {
        const found = undefinedEnumValue(m.get(f), `${path}.`);
        if (found) return found;
        break;
      }
      case "list": {
        let i = 0;
        for (const item of m.get(f)) {
          const at = `${path}[${i++}]`;
          if (f.listKind === "enum" && !defined(f.enum, item as number)) return { path: at, value: item as number, enum: f.enum };
          if (f.listKind === "message") {
            const found = undefinedEnumValue(item as ReflectMessage, `${at}.`);
            if (found) return found;
          }
        }
        break;
      }
      case "map": {
        for (const [key, value] of m.get(f)) {
          const at = `${path}[${JSON.stringify(String(key))}]`;
          if (f.mapKind === "enum" && !defined(f.enum, value as number)) return { path: at, value: value as number, enum: f.enum };
          if (f.mapKind === "message") {
            const found = undefinedEnumValue(value as ReflectMessage, `${at}.`);
            if (found) return found;
          }
        }
        break;
      }
      case "scalar":
        break;
    }
  }
  return undefined;
}

/** The error a client sees for a body that does not decode: the field if one is to blame, no parser detail. */
function decodeError(typeName: string, error: unknown): InvalidArgumentError {
  if (error instanceof InvalidArgumentError) return error;
  for (let e: unknown = error; e instanceof Error; e = e.cause) {
    if (isFieldError(e)) {
      return new InvalidArgumentError(e.field().name, "has a value that cannot be decoded (wrong type, or not one of its values)");
    }
  }
  return new InvalidArgumentError("request body", `cannot be decoded as ${typeName}`);
}

/** How a request body is framed and encoded, from its content type; undefined for anything else. */
function bodyFormat(contentType: string | null): { enveloped: boolean; binary: boolean } | undefined {
  const m = /^application\/(grpc(?:-web)?(?:\+(json|proto))?|json|proto)(?:\s*;\s*charset=utf-?8)?$/i.exec(contentType ?? "");
  if (!m) return undefined;
  const enveloped = m[1]!.toLowerCase().startsWith("grpc");
  const binary = enveloped ? m[2]?.toLowerCase() !== "json" : m[1]!.toLowerCase() === "proto";
  return { enveloped, binary };
}

const fatalUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function predecoding(inner: UniversalHandler, readMaxBytes: number) {
  const desc = inner.method.input;
  return async (req: UniversalServerRequest) => {
    const format = bodyFormat(req.header.get("content-type"));
    const encoded = ["content-encoding", "grpc-encoding"].some((h) => (req.header.get(h) ?? "identity") !== "identity");
    if (req.method !== "POST" || !format || encoded || !isByteStream(req.body)) return inner(req);
    const { chunks, rest } = await readUpTo(req.body, readMaxBytes + 5);
    const replay = { ...req, body: replayed(chunks, rest) };
    if (rest) return inner(replay); // connect-es answers RESOURCE_EXHAUSTED
    const bytes = Buffer.concat(chunks);
    const payload = format.enveloped ? singleEnvelope(bytes) : bytes;
    if (!payload) return inner(replay); // framing errors are connect-es's to report, without parser detail
    const problem = decodeProblem(desc, payload, format.binary);
    if (!problem) return inner(replay);
    const empty = format.binary ? new Uint8Array(0) : Buffer.from("{}");
    const body = format.enveloped ? Buffer.concat([envelopeHeader(empty.length), empty]) : empty;
    const contextValues = req.contextValues ?? createContextValues();
    contextValues.set(kUndecodable, decodeError(desc.typeName, problem));
    // connect-es checks the body against its Content-Length.
    const header = new Headers(req.header);
    if (header.has("content-length")) header.set("content-length", String(body.length));
    return inner({ ...req, header, contextValues, body: replayed([body], undefined) });
  };
}

/** Why the payload does not decode as `desc`, or undefined when it does. */
function decodeProblem(desc: DescMessage, payload: Uint8Array, binary: boolean): Error | undefined {
  try {
    if (binary) {
      fromBinary(desc, payload);
      return undefined;
    }
    const text = fatalUtf8.decode(payload);
    // Unknown keys are accepted, as connect-es accepts them; so are unknown enum names by
    // protobuf-es then, which would turn a misspelt filter into no filter: look for those.
    fromJsonString(desc, text, { ignoreUnknownFields: true });
    const unknown = unknownEnumName(desc, JSON.parse(text) as unknown, "");
    return unknown ? new InvalidArgumentError(unknown.path, `${JSON.stringify(unknown.name)} is not a ${unknown.enum.name} (one of ${unknown.enum.values.map((v) => v.name).join(", ")})`) : undefined;
  } catch (error) {
    return error instanceof Error ? error : new Error(String(error));
  }
}

/** The first enum field in a JSON request holding a name its enum does not have. */
function unknownEnumName(desc: DescMessage, json: unknown, prefix: string): { path: string; name: string; enum: DescEnum } | undefined {
  // Well-known types have JSON forms of their own, with no enum names in them.
  if (typeof json !== "object" || json === null || Array.isArray(json) || desc.typeName.startsWith("google.protobuf.")) return undefined;
  const obj = json as Record<string, unknown>;
  for (const f of desc.fields) {
    const value = f.jsonName in obj ? obj[f.jsonName] : obj[f.name];
    if (value === undefined || value === null) continue;
    const path = prefix + f.name;
    const named = (e: DescEnum, v: unknown) => typeof v !== "string" || e.values.some((x) => x.name === v || x.jsonName === v);
    const items: [string, unknown][] =
      f.fieldKind === "list" && Array.isArray(value)
        ? value.map((v, i) => [`${path}[${i}]`, v])
        : f.fieldKind === "map" && typeof value === "object"
          ? Object.entries(value as object).map(([k, v]) => [`${path}[${JSON.stringify(k)}]`, v])
          : [[path, value]];
    const kind = f.fieldKind === "list" ? f.listKind : f.fieldKind === "map" ? f.mapKind : f.fieldKind;
    for (const [at, v] of items) {
      if (kind === "enum" && f.enum && !named(f.enum, v)) return { path: at, name: String(v), enum: f.enum };
      if (kind === "message" && f.message) {
        const found = unknownEnumName(f.message, v, `${at}.`);
        if (found) return found;
      }
    }
  }
  return undefined;
}

function isByteStream(body: unknown): body is AsyncIterable<Uint8Array> {
  return typeof body === "object" && body !== null && Symbol.asyncIterator in body;
}

/** The body's chunks up to `limit` bytes; `rest` is the unread remainder of a longer body. */
async function readUpTo(body: AsyncIterable<Uint8Array>, limit: number): Promise<{ chunks: Uint8Array[]; rest?: AsyncIterator<Uint8Array> }> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const it = body[Symbol.asyncIterator]();
  for (;;) {
    const r = await it.next();
    if (r.done) return { chunks };
    chunks.push(r.value);
    size += r.value.length;
    if (size > limit) return { chunks, rest: it };
  }
}

async function* replayed(chunks: Uint8Array[], rest: AsyncIterator<Uint8Array> | undefined): AsyncGenerator<Uint8Array> {
  yield* chunks;
  if (rest) yield* { [Symbol.asyncIterator]: () => rest };
}

/** The payload of a body holding exactly one uncompressed envelope (flags, 4-byte length, message). */
function singleEnvelope(bytes: Buffer): Buffer | undefined {
  if (bytes.length < 5 || bytes[0] !== 0) return undefined;
  const length = bytes.readUInt32BE(1);
  return bytes.length === 5 + length ? bytes.subarray(5) : undefined;
}

function envelopeHeader(length: number): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt32BE(length, 1);
  return h;
}
