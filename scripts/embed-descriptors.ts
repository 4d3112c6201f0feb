// Build step (scripts/build-binary.ts): the binary's protobuf descriptors as object literals.
//
// Generated code (ours in src/gen, the well-known types in @bufbuild/protobuf) describes each
// .proto file with fileDesc("<base64 FileDescriptorProto>"). At run time that decodes the
// bytes by reflection over descriptor.proto, whose own descriptors must be built first: the
// largest part of a CLI call's start-up (`paddock task list`). Here each file is decoded once,
// at build time, by the real runtime, and the call is given the decoded FileDescriptorProto as
// a literal that builds the same objects (same own fields, same prototype defaults). fileDesc
// in the bundle takes that object, so descriptor.proto is built only by what uses it (gRPC
// reflection). The committed generated code is untouched: tests under Node run it as it is.
import { toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";

interface FileProto {
  name: string;
}
interface GenFileLike {
  kind: "file";
  proto: FileProto;
}

/** What @bufbuild/protobuf's codegenv2/file.js must do, checked before it is replaced by FILE_DESC_MODULE. */
export const FILE_DESC_EXPECTED = `const root = fromBinary(FileDescriptorProtoSchema, base64Decode(b64));
    root.messageType.forEach(restoreJsonNames);
    root.dependency = (_a = imports === null || imports === void 0 ? void 0 : imports.map((f) => f.proto.name)) !== null && _a !== void 0 ? _a : [];
    const reg = createEmbeddedFileRegistry(root, (protoFileName) => imports === null || imports === void 0 ? void 0 : imports.find((f) => f.proto.name === protoFileName));`;
/** That module in the binary: the same steps after the decoding (done at build time, json names restored). */
export const FILE_DESC_MODULE = `import { createEmbeddedFileRegistry } from "../registry.js";
export function fileDesc(root, imports) {
    if (typeof root === "string") throw new Error("a fileDesc() call was not embedded at build time (scripts/embed-descriptors.ts)");
    root.dependency = imports?.map((f) => f.proto.name) ?? [];
    const reg = createEmbeddedFileRegistry(root, (protoFileName) => imports?.find((f) => f.proto.name === protoFileName));
    return reg.getFile(root.name);
}
`;

const CALL = /fileDesc\("([^"]*)"/g;

/** JavaScript that builds `value` again: plain data, Uint8Array, bigint, and objects whose prototype holds defaults. */
function literal(value: unknown, prototypes: Map<object, string>, decls: string[]): string {
  if (typeof value === "bigint") return `${value}n`;
  if (value === undefined) return "undefined";
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (value instanceof Uint8Array) return `new Uint8Array([${value.join(",")}])`;
  if (Array.isArray(value)) return `[${value.map((v) => literal(v, prototypes, decls)).join(",")}]`;
  const parts = ownFields(value).map(([k, v]) => `${JSON.stringify(k)}:${literal(v, prototypes, decls)}`);
  const proto = Object.getPrototypeOf(value) as object | null;
  if (proto !== Object.prototype) {
    if (proto === null || Object.getPrototypeOf(proto) !== Object.prototype) throw new Error("embed-descriptors: an object with a deeper prototype chain than protobuf-es makes");
    let name = prototypes.get(proto);
    if (!name) {
      name = `p${prototypes.size}`;
      prototypes.set(proto, name);
      decls.push(`${name}=${literal({ ...proto }, prototypes, decls)}`);
    }
    parts.unshift(`__proto__:${name}`);
  }
  return `{${parts.join(",")}}`;
}

function ownFields(value: object): [string, unknown][] {
  return Reflect.ownKeys(value).map((k) => {
    const d = Object.getOwnPropertyDescriptor(value, k)!;
    if (typeof k !== "string" || !d.enumerable || !("value" in d)) throw new Error(`embed-descriptors: unexpected property ${String(k)}`);
    return [k, d.value];
  });
}

/** Whether two object graphs have the same own fields, values and prototype fields. */
function same(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (a instanceof Uint8Array || b instanceof Uint8Array) return a instanceof Uint8Array && b instanceof Uint8Array && a.length === b.length && a.every((x, i) => x === b[i]);
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const pa = Object.getPrototypeOf(a) as object;
  const pb = Object.getPrototypeOf(b) as object;
  if (!Array.isArray(a) && (pa === Object.prototype) !== (pb === Object.prototype)) return false;
  if (!Array.isArray(a) && pa !== Object.prototype && !same({ ...pa }, { ...pb })) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => k in b && same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/**
 * `source` (a generated *_pb module) with its fileDesc("…") call given the decoded
 * descriptor instead; `module` is that source's module as the real runtime loads it.
 * Throws when the rebuilt object would differ from the runtime's in any way.
 */
export function embedDescriptors(source: string, module: Record<string, unknown>): string {
  const files = Object.values(module).filter((v): v is GenFileLike => typeof v === "object" && v !== null && (v as GenFileLike).kind === "file");
  const calls = [...source.matchAll(CALL)];
  if (calls.length === 0) return source;
  if (calls.length !== 1 || files.length !== 1) throw new Error(`embed-descriptors: expected one fileDesc() call and one file export, found ${calls.length} and ${files.length}`);
  const proto = files[0]!.proto;
  const prototypes = new Map<object, string>();
  const decls: string[] = [];
  const body = literal(proto, prototypes, decls);
  const expr = decls.length ? `(()=>{const ${decls.join(",")};return ${body}})()` : body;
  const rebuilt = new Function(`return ${expr}`)() as FileProto;
  const bytes = (p: FileProto) => toBinary(FileDescriptorProtoSchema, p as never);
  if (!same(rebuilt, proto) || Buffer.compare(bytes(rebuilt), bytes(proto)) !== 0) throw new Error(`embed-descriptors: ${proto.name} rebuilt differs from the runtime's`);
  return source.replace(calls[0]![0], () => `fileDesc(${expr}`);
}

/**
 * descriptor_pb's TypeScript enums, which connect's transports import from the wkt index
 * (MethodOptions_IdempotencyLevel): plain objects, copied so that the index needs no module
 * that builds descriptor.proto's descriptors.
 */
export async function descriptorEnums(): Promise<string> {
  const d = (await import("@bufbuild/protobuf/wkt/google/protobuf/descriptor_pb.js")) as Record<string, unknown>;
  const isEnum = (v: unknown) => typeof v === "object" && v !== null && !("kind" in v) && Object.values(v).every((x) => typeof x === "number" || typeof x === "string");
  return Object.entries(d)
    .filter(([, v]) => isEnum(v))
    .map(([k, v]) => `export const ${k} = ${JSON.stringify(v)};`)
    .join("\n");
}

/**
 * Re-exports that would put descriptor.proto's descriptors (built at module load) in every
 * role's chunks: the bundle splits by which modules import which, and generated code imports
 * the wkt and codegenv2 indexes. Nothing of paddock's reaches descriptor_pb's messages
 * through the indexes (src/api/reflection.ts imports descriptor_pb.js itself); a build that
 * needs one fails. Each line is replaced by the text given.
 */
export const INDEX_EXPORTS_REPLACED: { file: RegExp; lines: [string, () => Promise<string>][] }[] = [
  { file: /[\\/]@bufbuild[\\/]protobuf[\\/]dist[\\/]esm[\\/]codegenv2[\\/]index\.js$/, lines: [['export * from "./embed.js";', async () => ""]] },
  {
    file: /[\\/]@bufbuild[\\/]protobuf[\\/]dist[\\/]esm[\\/]wkt[\\/]index\.js$/,
    lines: [
      ['export * from "./google/protobuf/descriptor_pb.js";', descriptorEnums],
      ['export * from "./google/protobuf/compiler/plugin_pb.js";', async () => ""],
    ],
  },
];
