import type { Logger } from "pino";

export interface ReadinessChecks {
  /** Throws when the store cannot take a write. */
  store(): void;
  /** Providers whose init() has not finished. */
  uninitialisedProviders(): string[];
}

export interface Readiness {
  ready: boolean;
  /** The checks that failed, each with a reason fit for an unauthenticated caller. */
  failed: { check: string; reason: string }[];
}

/**
 * What /readyz answers. The reasons are generic: the endpoint is open, so the store's own
 * error (paths, SQL) goes to the log only.
 */
export function createReadiness(checks: ReadinessChecks, logger: Logger): () => Readiness {
  return () => {
    const failed: Readiness["failed"] = [];
    try {
      checks.store();
    } catch (error) {
      logger.warn({ err: error }, "readiness: the store does not take writes");
      failed.push({ check: "store", reason: "the database does not take writes" });
    }
    for (const name of checks.uninitialisedProviders()) {
      failed.push({ check: `provider:${name}`, reason: `sandbox provider ${name} is not initialised` });
    }
    return { ready: failed.length === 0, failed };
  };
}
