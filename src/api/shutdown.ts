import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";

export const SHUTDOWN_MESSAGE = "the daemon is shutting down; reconnect with after_seq";

/** The reason the daemon's shutdown signal is aborted with; it reaches every handler's ctx.signal. */
export function shutdownReason(): ConnectError {
  return new ConnectError(SHUTDOWN_MESSAGE, Code.Unavailable);
}

function isShutdown(ctx: HandlerContext): boolean {
  const reason: unknown = ctx.signal.reason;
  return ctx.signal.aborted && reason instanceof ConnectError && reason.code === Code.Unavailable && reason.rawMessage === SHUTDOWN_MESSAGE;
}

/**
 * A server stream that, when the daemon shuts down, ends with UNAVAILABLE instead of
 * quietly (a follower would think the run was over) or cut mid-message. A client's own
 * cancel still ends it as before.
 */
export async function* endOnShutdown<T>(ctx: HandlerContext, stream: AsyncIterable<T>): AsyncGenerator<T> {
  try {
    for await (const item of stream) {
      if (isShutdown(ctx)) break;
      yield item;
    }
  } catch (error) {
    if (!isShutdown(ctx)) throw error;
  }
  if (isShutdown(ctx)) throw shutdownReason();
}
