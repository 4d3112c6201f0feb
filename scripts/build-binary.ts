// Builds dist/paddock, the one binary of every role (see package.json "build"). Run with Bun.
//
// Split into chunks (--splitting) so each role loads only its own modules, with bytecode so
// those load fast. dockerode requires two things paddock never uses at the top of its
// modules: ssh2 (engines over SSH; paddock speaks to a unix socket) and gRPC (BuildKit
// sessions; paddock builds no images). Together ~30 MiB of every daemon that has a docker
// engine: the plugin below defers those two requires to their first use, nothing else.
// The bytecode is laid out by what an idle daemon ran (Bun's --bytecode-order): the build
// makes the binary once, starts its `serve` until it listens with BUN_BYTECODE_ORDER_OUT,
// and builds again with that order: ~4 MiB less RSS for an idle daemon. BYTECODE_ORDER=file[,file]
// gives the order files instead (recorded by earlier runs), BYTECODE_ORDER=none builds once without.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { embedDescriptors, FILE_DESC_EXPECTED, FILE_DESC_MODULE, INDEX_EXPORTS_REPLACED } from "./embed-descriptors.ts";

interface OnLoadArgs {
  path: string;
}
interface PluginBuilder {
  onLoad(options: { filter: RegExp }, callback: (args: OnLoadArgs) => Promise<{ contents: string; loader: string }>): void;
}
declare const Bun: {
  build(options: Record<string, unknown>): Promise<{ success: boolean; logs: unknown[]; metafile?: unknown }>;
  write(path: string, text: string): Promise<number>;
  file(path: string): { text(): Promise<string> };
};

const root = resolve(import.meta.dirname, "..");

/** Each vendor file and the exact text replaced: the build fails if an upgrade changed it. */
const LAZY_REQUIRES: { file: RegExp; from: string; to: string }[] = [
  {
    file: /docker-modem[\\/]lib[\\/]ssh\.js$/,
    from: "var Client = require('ssh2').Client,",
    to: "var Client = function () { return new (require('ssh2').Client)(); },",
  },
  {
    file: /dockerode[\\/]lib[\\/]session\.js$/,
    from: 'var grpc = require("@grpc/grpc-js"),\n  protoLoader = require("@grpc/proto-loader"),',
    to: 'var grpc = new Proxy({}, { get: (_, k) => require("@grpc/grpc-js")[k] }),\n  protoLoader = new Proxy({}, { get: (_, k) => require("@grpc/proto-loader")[k] }),',
  },
  // connect-node imports node:http2, node:https and node:zlib at the top of its modules; a CLI
  // call over HTTP/1.1 to a unix socket or plain http uses none of them, and in Bun each is a
  // builtin module of its own to load (about a third of `paddock task list`'s start-up).
  {
    file: /@connectrpc[\\/]connect-node[\\/]dist[\\/]esm[\\/]http2-session-manager\.js$/,
    from: 'import * as http2 from "node:http2";',
    to: 'const http2 = new Proxy({}, { get: (_, k) => require("node:http2")[k] });',
  },
  {
    file: /@connectrpc[\\/]connect-node[\\/]dist[\\/]esm[\\/]node-universal-client\.js$/,
    from: 'import * as https from "node:https";',
    to: 'const https = new Proxy({}, { get: (_, k) => require("node:https")[k] });',
  },
  {
    file: /@connectrpc[\\/]connect-node[\\/]dist[\\/]esm[\\/]compression\.js$/,
    from: `import * as zlib from "node:zlib";
import { promisify } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { getNodeErrorProps } from "./node-error.js";
const gzip = promisify(zlib.gzip);
const gunzip = promisify(zlib.gunzip);
const brotliCompress = promisify(zlib.brotliCompress);
const brotliDecompress = promisify(zlib.brotliDecompress);`,
    to: `import { promisify } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { getNodeErrorProps } from "./node-error.js";
const lazyZlib = (name) => { let f; return (...a) => (f ??= promisify(require("node:zlib")[name]))(...a); };
const gzip = lazyZlib("gzip");
const gunzip = lazyZlib("gunzip");
const brotliCompress = lazyZlib("brotliCompress");
const brotliDecompress = lazyZlib("brotliDecompress");`,
  },
];

const lazyDockerExtras = {
  name: "lazy-docker-extras",
  setup(build: PluginBuilder) {
    for (const { file, from, to } of LAZY_REQUIRES) {
      build.onLoad({ filter: file }, async ({ path }) => {
        const text = await Bun.file(path).text();
        if (!text.includes(from)) throw new Error(`${path} no longer starts with the require scripts/build-binary.ts defers; update LAZY_REQUIRES`);
        return { contents: text.replace(from, to), loader: "js" };
      });
    }
  },
};

// Protobuf descriptors decoded here rather than at every start (see embed-descriptors.ts):
// generated *_pb modules, ours and the well-known types', and the fileDesc() that takes them.
const embeddedDescriptors = {
  name: "embedded-descriptors",
  setup(build: PluginBuilder) {
    build.onLoad({ filter: /[\\/]@bufbuild[\\/]protobuf[\\/]dist[\\/]esm[\\/]codegenv2[\\/]file\.js$/ }, async ({ path }) => {
      if (!(await Bun.file(path).text()).includes(FILE_DESC_EXPECTED)) throw new Error(`${path} changed: update FILE_DESC_MODULE in scripts/embed-descriptors.ts`);
      return { contents: FILE_DESC_MODULE, loader: "js" };
    });
    for (const { file, lines } of INDEX_EXPORTS_REPLACED) {
      build.onLoad({ filter: file }, async ({ path }) => {
        let text = await Bun.file(path).text();
        for (const [line, replacement] of lines) {
          if (!text.includes(line)) throw new Error(`${path} no longer has ${line}: update INDEX_EXPORTS_REPLACED in scripts/embed-descriptors.ts`);
          const by = await replacement();
          text = text.replace(line, () => by);
        }
        return { contents: text, loader: "js" };
      });
    }
    // Every generated module (ours, the well-known types, connect's google.rpc.Status): the
    // replaced fileDesc() refuses one that was missed.
    build.onLoad({ filter: /_pb\.[jt]s$/ }, async ({ path }) => ({
      contents: embedDescriptors(await Bun.file(path).text(), (await import(path)) as Record<string, unknown>),
      loader: path.endsWith(".ts") ? "ts" : "js",
    }));
  },
};

// `--chunks DIR`: the same chunks as plain files in DIR with a metafile, not an executable,
// for `npm run bench -- modules` to trace which of them each role loads.
const chunksAt = process.argv.indexOf("--chunks");
const outfile = resolve(root, "dist/paddock");

async function build(bytecodeOrder: string[] | null) {
  const output =
    chunksAt > 0
      ? { outdir: resolve(process.argv[chunksAt + 1]!), target: "bun", metafile: true }
      : { entrypoints: [resolve(root, "src/main.ts"), resolve(root, "dist/web-ui.pack")], compile: { outfile, bytecodeOrder }, bytecode: true };
  const result = await Bun.build({
    entrypoints: [resolve(root, "src/main.ts")],
    ...output,
    splitting: true,
    format: "esm",
    minify: { syntax: true },
    external: ["better-sqlite3", "cpu-features"],
    plugins: [lazyDockerExtras, embeddedDescriptors],
    // Without it Bun resolves packages' "development" export condition: xstate's development
    // build (extra checks and warnings on every transition) was in the binary.
    define: { "process.env.NODE_ENV": '"production"' },
  });
  if (!result.success) {
    console.error(result.logs);
    process.exit(1);
  }
  return result;
}

/** The order file of the built binary's `serve`, from its start until it listens (then SIGTERM), in `dir`. */
async function recordServeOrder(dir: string): Promise<string | null> {
  const order = join(dir, "serve.order");
  const daemon = spawn(outfile, ["serve", "--data-dir", join(dir, "data"), "--listen", "127.0.0.1:0", "--socket", "", "--log-format", "json"], {
    env: { PATH: process.env.PATH, HOME: dir, BUN_BYTECODE_ORDER_OUT: order },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const exited = new Promise<number | null>((r) => daemon.once("exit", r));
  let err = "";
  const listening = await new Promise<boolean>((r) => {
    const timer = setTimeout(() => r(false), 30_000);
    daemon.stderr!.on("data", (d: Buffer) => (err += d) && err.includes("paddock listening") && (clearTimeout(timer), r(true)));
    void exited.then(() => (clearTimeout(timer), r(false)));
  });
  daemon.kill("SIGTERM");
  await exited;
  if (!listening) console.error(`build-binary: the daemon did not start to record its bytecode order; built without one\n${err}`);
  return listening ? order : null;
}

const orderEnv = process.env.BYTECODE_ORDER;
if (chunksAt > 0) {
  const result = await build(null);
  await Bun.write(resolve(process.argv[chunksAt + 1]!, "metafile.json"), JSON.stringify(result.metafile));
  console.log(process.argv[chunksAt + 1]);
} else if (orderEnv) {
  await build(orderEnv === "none" ? null : orderEnv.split(","));
  console.log("dist/paddock");
} else {
  await build(null);
  const dir = mkdtempSync(join(tmpdir(), "paddock-order-"));
  try {
    const order = await recordServeOrder(dir);
    if (order) await build([order]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  console.log("dist/paddock (bytecode laid out by an idle daemon's start)");
}
