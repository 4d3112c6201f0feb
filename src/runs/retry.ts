import { setTimeout as sleep } from "node:timers/promises";
import { isRetryable } from "../errors.js";

/** Runs fn, retrying with exponential backoff only errors isRetryable() accepts. */
export async function withRetry<T>(
  fn: () => Promise<T>,
  signal: AbortSignal,
  { attempts = 4, baseMs = 250 }: { attempts?: number; baseMs?: number } = {},
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (signal.aborted || attempt >= attempts || !isRetryable(error)) throw error;
      await sleep(baseMs * 2 ** (attempt - 1), undefined, { signal });
    }
  }
}
