import type * as http from "node:http";
import type { RequestHandler } from "./listener.js";
import type { WebAsset } from "./web-assets.js";

/**
 * The page may load only its own script and style and talk only to this daemon; nothing
 * inline, no frames. The UI's own code builds every element, so it needs nothing more.
 */
export const WEB_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/**
 * Serves the web UI (GET and HEAD of "/" and "/assets/…") on the API's own port; every
 * other path goes to `next`. No API path can clash: Connect's are "/<package>.<Service>/<Method>".
 */
export function withWebUi(next: RequestHandler, assets: Map<string, WebAsset> | null): RequestHandler {
  return (req, res) => {
    const path = (req.url ?? "").split("?")[0]!;
    if (path !== "/" && path !== "/index.html" && !path.startsWith("/assets/")) return next(req, res);
    // The http2 compat response has the same methods; one cast keeps the calls below simple.
    const out = res as http.ServerResponse;
    const common = { "x-content-type-options": "nosniff", "referrer-policy": "no-referrer" };
    if (req.method !== "GET" && req.method !== "HEAD") {
      out.writeHead(405, { ...common, allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" });
      return void out.end(`${path} answers GET only\n`);
    }
    const asset = assets?.get(path === "/index.html" ? "/" : path);
    if (!asset) {
      out.writeHead(404, { ...common, "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
      return void out.end(assets ? "not found\n" : "this paddock was built without its web UI (npm run build makes it)\n");
    }
    const headers: Record<string, string> = {
      ...common,
      "content-type": asset.contentType,
      etag: asset.etag,
      vary: "Accept-Encoding",
      // The page itself is revalidated every time (it names the current hashed assets).
      "cache-control": asset.immutable ? "public, max-age=31536000, immutable" : "no-cache",
    };
    if (asset.contentType.startsWith("text/html")) {
      headers["content-security-policy"] = WEB_CSP;
      headers["x-frame-options"] = "DENY";
    }
    if (req.headers["if-none-match"] === asset.etag) {
      out.writeHead(304, headers);
      return void out.end();
    }
    const gzip = asset.gzip && /\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""));
    const body = gzip ? asset.gzip! : asset.body;
    if (gzip) headers["content-encoding"] = "gzip";
    headers["content-length"] = String(body.length);
    out.writeHead(200, headers);
    out.end(req.method === "HEAD" ? undefined : body);
  };
}
