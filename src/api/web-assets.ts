import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { gzipSync } from "node:zlib";

/** One file of the web UI, ready to send. */
export interface WebAsset {
  contentType: string;
  body: Buffer;
  /** Sent to clients that accept gzip when it is smaller. */
  gzip: Buffer | null;
  etag: string;
  /** Hashed file names never change content: browsers keep them for a year. */
  immutable: boolean;
}

/** What scripts/build-web.ts writes to dist/web-ui.pack: the UI's files by URL path. */
export interface WebPack {
  files: Record<string, { contentType: string; body: string; immutable: boolean }>;
}

export const WEB_PACK_NAME = "web-ui.pack";

/**
 * The web UI's files: embedded in the compiled binary (the pack is one of `bun build
 * --compile`'s inputs, so Bun lists it in `Bun.embeddedFiles`), else read from dist/ beside
 * the sources (development and tests on Node). Null when the UI was not built.
 */
export async function loadWebAssets(packPath = new URL(`../../dist/${WEB_PACK_NAME}`, import.meta.url)): Promise<Map<string, WebAsset> | null> {
  const text = (await embeddedPack()) ?? (await readFile(packPath, "utf8").catch(() => null));
  return text === null ? null : webAssets(JSON.parse(text) as WebPack);
}

export function webAssets(pack: WebPack): Map<string, WebAsset> {
  const assets = new Map<string, WebAsset>();
  for (const [path, file] of Object.entries(pack.files)) {
    const body = Buffer.from(file.body, "utf8");
    const gzip = gzipSync(body, { level: 9 });
    assets.set(path, {
      contentType: file.contentType,
      body,
      gzip: gzip.length < body.length ? gzip : null,
      etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`,
      immutable: file.immutable,
    });
  }
  return assets;
}

async function embeddedPack(): Promise<string | null> {
  // Bun's global, typed here by hand: the daemon's types are Node's.
  const bun = (globalThis as { Bun?: { embeddedFiles?: readonly (Blob & { name?: string })[] } }).Bun;
  // Bun names an embedded file "<name>-<hash>.<ext>".
  const file = bun?.embeddedFiles?.find((f) => /^web-ui(-[a-z0-9]+)?\.pack$/.test(f.name ?? ""));
  return file ? await file.text() : null;
}
