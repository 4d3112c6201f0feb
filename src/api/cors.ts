import { cors as connectCors } from "@connectrpc/connect";
import type * as http from "node:http";
import type { RequestHandler } from "./listener.js";

/**
 * The header lists Connect publishes for CORS (`cors` of @connectrpc/connect: Connect,
 * gRPC-Web and gRPC's request headers, grpc-status and grpc-message exposed), plus the one
 * header of our own: the bearer token. (@connectrpc/cors is not on the npm registry; these
 * are the same lists.)
 */
export const CORS_ALLOWED_METHODS = connectCors.allowedMethods;
export const CORS_ALLOWED_HEADERS = [...connectCors.allowedHeaders, "Authorization"];
export const CORS_EXPOSED_HEADERS = connectCors.exposedHeaders;
/** How long a browser may cache a preflight's answer (Chromium caps it at 2 hours). */
const PREFLIGHT_MAX_AGE_S = 7200;

/**
 * Lets pages from `origins` (exact origins, or "*") call the API; with none, nothing is
 * added and cross-origin calls fail in the browser as before. Preflights (OPTIONS with
 * Access-Control-Request-Method) are answered here, before the Connect adapter, which
 * would refuse the method; an origin not on the list gets a 403 with no CORS headers.
 */
export function withCors(next: RequestHandler, origins: readonly string[]): RequestHandler {
  if (origins.length === 0) return next;
  const any = origins.includes("*");
  const allowed = new Set(origins);
  return (req, res) => {
    const origin = header(req.headers.origin);
    // The http2 compat response has the same methods; one cast keeps the calls below simple.
    const out = res as http.ServerResponse;
    const preflight = req.method === "OPTIONS" && header(req.headers["access-control-request-method"]) !== undefined;
    if (!origin) return next(req, res);
    const ok = any || allowed.has(origin);
    if (preflight) {
      out.setHeader("vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
      if (!ok) {
        out.writeHead(403, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
        return void out.end(`origin ${origin} is not allowed (--cors-origin)\n`);
      }
      out.writeHead(204, {
        "access-control-allow-origin": any ? "*" : origin,
        "access-control-allow-methods": CORS_ALLOWED_METHODS.join(", "),
        "access-control-allow-headers": CORS_ALLOWED_HEADERS.join(", "),
        "access-control-max-age": String(PREFLIGHT_MAX_AGE_S),
      });
      return void out.end();
    }
    if (ok) {
      out.setHeader("access-control-allow-origin", any ? "*" : origin);
      out.setHeader("access-control-expose-headers", CORS_EXPOSED_HEADERS.join(", "));
    }
    out.setHeader("vary", "Origin");
    next(req, res);
  };
}

function header(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
