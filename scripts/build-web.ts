// Builds the web UI (web/) into dist/web-ui.pack, the one file the daemon serves it from:
// embedded by `bun build --compile` (see package.json), read from dist/ on Node.
// Run with Bun: `bun scripts/build-web.ts` (npm run build:web).
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { gzipSync } from "node:zlib";

declare const Bun: {
  build(options: Record<string, unknown>): Promise<{ success: boolean; logs: unknown[]; outputs: { path: string; kind: string; text(): Promise<string> }[] }>;
};

const root = resolve(import.meta.dirname, "..");
const outDir = join(root, "dist", "web");
mkdirSync(outDir, { recursive: true });
// Written whole and renamed: tests may build while a daemon reads the pack.
const write = (path: string, text: string) => {
  writeFileSync(`${path}.${process.pid}.tmp`, text);
  renameSync(`${path}.${process.pid}.tmp`, path);
};

const result = await Bun.build({
  entrypoints: [join(root, "web", "main.tsx"), join(root, "web", "style.css")],
  target: "browser",
  format: "esm",
  minify: true,
  naming: "[name]-[hash].[ext]",
  define: { "process.env.NODE_ENV": '"production"' },
});
if (!result.success) {
  console.error(result.logs);
  process.exit(1);
}

const files: Record<string, { contentType: string; body: string; immutable: boolean }> = {};
const names: Record<string, string> = {};
for (const output of result.outputs) {
  const name = basename(output.path);
  const contentType = name.endsWith(".css") ? "text/css; charset=utf-8" : "text/javascript; charset=utf-8";
  const body = await output.text();
  write(join(outDir, name), body);
  files[`/assets/${name}`] = { contentType, body, immutable: true };
  names[name.endsWith(".css") ? "css" : "js"] = `/assets/${name}`;
}
const html = readFileSync(join(root, "web", "index.html"), "utf8").replace("%CSS%", names.css!).replace("%JS%", names.js!);
write(join(outDir, "index.html"), html);
files["/"] = { contentType: "text/html; charset=utf-8", body: html, immutable: false };
write(join(root, "dist", "web-ui.pack"), JSON.stringify({ files }));

let raw = 0;
let gz = 0;
for (const [path, f] of Object.entries(files)) {
  const size = Buffer.byteLength(f.body);
  const gzip = gzipSync(f.body, { level: 9 }).length;
  raw += size;
  gz += gzip;
  console.log(`  ${path.padEnd(40)} ${String(size).padStart(8)} B  ${String(gzip).padStart(7)} B gzip`);
}
console.log(`web UI: ${raw} B, ${gz} B gzip → dist/web-ui.pack`);
