import type * as http from "node:http";
import type { Logger } from "pino";
import type { RequestHandler } from "./listener.js";
import type { Metrics } from "./metrics.js";
import type { Readiness } from "./readiness.js";

/**
 * Answers /healthz, /readyz and /metrics over plain HTTP before the Connect adapter sees
 * the request: probes and scrapers speak neither Connect nor gRPC, and carry no token
 * (like grpc.health.v1). Everything else goes to `next`.
 */
export function withPlainEndpoints(next: RequestHandler, deps: { metrics: Metrics; readiness: () => Readiness; logger: Logger }): RequestHandler {
  return (req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (path !== "/healthz" && path !== "/readyz" && path !== "/metrics") return next(req, res);
    // The http2 compat response has the same methods; one cast keeps the calls below simple.
    const out = res as http.ServerResponse;
    const send = (status: number, contentType: string, body: string): void => {
      out.writeHead(status, { "content-type": contentType, "cache-control": "no-store" });
      out.end(body);
    };
    if (req.method !== "GET") {
      out.setHeader("allow", "GET");
      return send(405, "text/plain; charset=utf-8", `${path} answers GET only\n`);
    }
    if (path === "/healthz") return send(200, "text/plain; charset=utf-8", "ok\n");
    if (path === "/readyz") {
      const r = deps.readiness();
      return send(r.ready ? 200 : 503, "application/json", `${JSON.stringify(r.ready ? { status: "ready" } : { status: "not ready", failed: r.failed })}\n`);
    }
    deps.metrics.scrape().then(
      ({ contentType, body }) => send(200, contentType, body),
      (error: unknown) => {
        deps.logger.error({ err: error }, "metrics scrape failed");
        send(500, "text/plain; charset=utf-8", "metrics failed; see the daemon's log\n");
      },
    );
  };
}
