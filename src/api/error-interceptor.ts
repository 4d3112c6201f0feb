import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { AlreadyExistsError, DomainError, FailedPreconditionError, InvalidArgumentError, ResourceExhaustedError, NotFoundError, PermissionDeniedError, SandboxError } from "../errors.js";

/** The one place domain errors become Connect codes. */
export function toConnectError(error: unknown, logger: Logger, procedure: string): ConnectError {
  if (error instanceof ConnectError) return error;
  if (error instanceof InvalidArgumentError) return new ConnectError(error.message, Code.InvalidArgument);
  if (error instanceof NotFoundError) return new ConnectError(error.message, Code.NotFound);
  if (error instanceof AlreadyExistsError) return new ConnectError(error.message, Code.AlreadyExists);
  if (error instanceof PermissionDeniedError) return new ConnectError(error.message, Code.PermissionDenied);
  if (error instanceof FailedPreconditionError) return new ConnectError(error.message, Code.FailedPrecondition);
  if (error instanceof ResourceExhaustedError) return new ConnectError(error.message, Code.ResourceExhausted);
  if (error instanceof SandboxError) return new ConnectError(error.message, Code.Unavailable);
  if (error instanceof DomainError) return new ConnectError(error.message, Code.FailedPrecondition);
  // Anything else is our bug or the environment's: log it whole, tell the client nothing of it.
  logger.error({ err: error, procedure }, "internal error");
  return new ConnectError("internal error", Code.Internal);
}

export function errorInterceptor(logger: Logger): Interceptor {
  return (next) => async (req) => {
    try {
      const res = await next(req);
      if (!res.stream) return res;
      // Streaming responses fail while iterating; map those errors too.
      const message = (async function* () {
        try {
          yield* res.message;
        } catch (error) {
          throw toConnectError(error, logger, req.url);
        }
      })();
      return { ...res, message };
    } catch (error) {
      throw toConnectError(error, logger, req.url);
    }
  };
}
