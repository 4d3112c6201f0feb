/**
 * Domain errors. Code below api/ throws these; one interceptor maps them to Connect
 * codes. Anything else reaches a client only as a generic "internal error".
 */
export class DomainError extends Error {
  override name = "DomainError";
}

/** Bad input; `field` names the request field at fault. */
export class InvalidArgumentError extends DomainError {
  override name = "InvalidArgumentError";
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

export class NotFoundError extends DomainError {
  override name = "NotFoundError";
  constructor(kind: string, id: string) {
    super(`${kind} ${JSON.stringify(id)} not found`);
  }
}

/** A thing with this name exists already (the store's unique constraint, as a domain fact). */
export class AlreadyExistsError extends DomainError {
  override name = "AlreadyExistsError";
  constructor(kind: string, key: string) {
    super(`${kind} ${JSON.stringify(key)} already exists`);
  }
}

/** The caller is known but may not do this (another team's tokens, a scope it cannot grant). */
export class PermissionDeniedError extends DomainError {
  override name = "PermissionDeniedError";
}

/** The thing exists but is in a state where this cannot happen (complete a cleaned run). */
export class FailedPreconditionError extends DomainError {
  override name = "FailedPreconditionError";
}

/** Too much at once: the queue is full. The message says which limit and how to wait. */
export class ResourceExhaustedError extends DomainError {
  override name = "ResourceExhaustedError";
}

/** A sandbox provider failed; `retryable` says whether trying again can help. */
export class SandboxError extends DomainError {
  override name = "SandboxError";
  constructor(
    message: string,
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isRetryable(error: unknown): boolean {
  if (error instanceof SandboxError) return error.retryable;
  const code = (error as { code?: unknown } | null)?.code;
  // Transient conditions of the OS or the network; everything else is a real failure.
  return typeof code === "string" && ["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EAGAIN", "EBUSY"].includes(code);
}
