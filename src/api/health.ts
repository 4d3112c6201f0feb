import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import type { HealthCheckRequest } from "../gen/grpc/health/v1/health_pb.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../gen/grpc/health/v1/health_pb.js";

export { ServingStatus };

export interface HealthService {
  /** Records `service`'s status and tells its watchers. Ignored after shutdown(). */
  setStatus(service: string, status: ServingStatus): void;
  /** Marks every service NOT_SERVING and ends all Watch streams once they report it. */
  shutdown(): void;
  register(router: ConnectRouter): void;
}

/**
 * grpc.health.v1.Health. The empty service name stands for the whole server
 * and starts SERVING; any other name is unknown until setStatus() names it.
 */
export function createHealth(): HealthService {
  const statuses = new Map<string, ServingStatus>([["", ServingStatus.SERVING]]);
  let shutDown = false;
  // Replaced on every change; watchers await the current one.
  let wake = (): void => {};
  let changed = new Promise<void>((resolve) => (wake = resolve));
  const notify = (): void => {
    wake();
    changed = new Promise<void>((resolve) => (wake = resolve));
  };

  const check = (req: HealthCheckRequest): { status: ServingStatus } => {
    const status = statuses.get(req.service);
    // The health-checking spec answers an unknown service with NOT_FOUND.
    if (status === undefined) throw new ConnectError(`unknown service "${req.service}"`, Code.NotFound);
    return { status };
  };

  async function* watch(req: HealthCheckRequest, ctx: HandlerContext) {
    let last: ServingStatus | undefined;
    while (!ctx.signal.aborted) {
      const status = statuses.get(req.service) ?? ServingStatus.SERVICE_UNKNOWN;
      if (status !== last) {
        last = status;
        yield { status };
        // Read again before waiting: it may have changed while we were suspended.
        continue;
      }
      if (shutDown) return;
      await untilChangedOrAborted(changed, ctx.signal);
    }
  }

  return {
    setStatus(service, status) {
      if (shutDown) return;
      statuses.set(service, status);
      notify();
    },
    shutdown() {
      if (shutDown) return;
      for (const service of statuses.keys()) statuses.set(service, ServingStatus.NOT_SERVING);
      shutDown = true;
      notify();
    },
    register(router) {
      router.service(Health, {
        check,
        list: () => ({
          statuses: Object.fromEntries([...statuses].map(([service, status]) => [service, { status }])),
        }),
        watch,
      });
    },
  };
}

function untilChangedOrAborted(changed: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = (): void => {
      signal.removeEventListener("abort", done);
      resolve();
    };
    signal.addEventListener("abort", done, { once: true });
    void changed.then(done);
  });
}
