import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { authInterceptor, kTrustedTransport } from "./auth.js";
import { errorInterceptor } from "./error-interceptor.js";
import { specGrpcMessage } from "./grpc-message.js";
import { createHealth, type HealthService } from "./health.js";
import type { RequestHandler } from "./listener.js";
import { decodeUnaryBodiesFirst, requestChecks } from "./request-checks.js";
import { createRoutes, type RoutesDeps } from "./routes.js";

/** The largest request message accepted. */
const READ_MAX_BYTES = 4 * 1024 * 1024;

export interface ApiHandlers {
  /** The Connect/gRPC/gRPC-Web services for TCP (untrusted) and the unix socket (trusted transport). */
  tcp: RequestHandler;
  unix: RequestHandler;
  health: HealthService;
}

/**
 * Every service of the API, on Connect's node adapter. Its own module: the app loads it at
 * the first request for it (see app.ts), so a daemon that only answers probes, scrapes and
 * the web UI never evaluates Connect, protobuf or the services' descriptors.
 */
export function createApiHandlers(deps: Omit<RoutesDeps, "health"> & { logger: Logger; shutdownSignal: AbortSignal }): ApiHandlers {
  const health = createHealth();
  const routes = createRoutes({ ...deps, health });
  const handler = (trusted: boolean) =>
    specGrpcMessage(
      connectNodeAdapter({
        routes: (router) => {
          routes(router);
          decodeUnaryBodiesFirst(router, READ_MAX_BYTES);
        },
        // Auth inside the error boundary: its ConnectErrors pass through unchanged. Request
        // checks after auth: a caller without a token learns nothing about bodies.
        interceptors: [errorInterceptor(deps.logger), authInterceptor(deps.apiTokens), requestChecks()],
        contextValues: () => createContextValues().set(kTrustedTransport, trusted),
        shutdownSignal: deps.shutdownSignal,
        // No gzip: clients are on this host or a LAN, where compressing every log batch
        // costs more CPU than the bytes it saves.
        acceptCompression: [],
        readMaxBytes: READ_MAX_BYTES,
        writeMaxBytes: 16 * 1024 * 1024,
        // The longest deadline a client may ask for: a follow of a run's whole life.
        maxTimeoutMs: 25 * 3600_000,
      }),
    );
  return { tcp: handler(false), unix: handler(true), health };
}
