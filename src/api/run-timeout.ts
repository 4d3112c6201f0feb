import type { Duration } from "@bufbuild/protobuf/wkt";
import { InvalidArgumentError } from "../errors.js";

const MAX_TIMEOUT_MS = 24 * 3600_000;

/** A run deadline from a request: null when unset, else more than 0 and at most 24 h. */
export function runTimeoutMs(field: string, d: Duration | undefined): number | null {
  if (!d) return null;
  const ms = Number(d.seconds) * 1000 + Math.floor(d.nanos / 1e6);
  if (!(ms > 0) || ms > MAX_TIMEOUT_MS) throw new InvalidArgumentError(field, "must be more than 0 and at most 24h");
  return ms;
}
