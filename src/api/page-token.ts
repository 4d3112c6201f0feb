import { InvalidArgumentError } from "../errors.js";

/** Opaque keyset cursors: the position after the last item of the previous page. */
export function encodePageToken(before: number): string {
  return Buffer.from(JSON.stringify({ b: before })).toString("base64url");
}

export function decodePageToken(token: string): number {
  if (!token) return Number.MAX_SAFE_INTEGER;
  try {
    const { b } = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as { b: unknown };
    if (typeof b === "number" && Number.isSafeInteger(b) && b > 0) return b;
  } catch {
    /* fall through */
  }
  throw new InvalidArgumentError("page_token", "is malformed; pass next_page_token from a previous response unchanged");
}

export function pageSize(requested: number): number {
  if (requested === 0) return 50;
  if (requested < 0 || requested > 1000) throw new InvalidArgumentError("page_size", "must be between 1 and 1000 (0 means 50)");
  return requested;
}

/** Fetches one more than asked to know whether another page exists. */
export function paginate<T>(rows: T[], size: number, keyOf: (t: T) => number): { items: T[]; nextPageToken: string } {
  if (rows.length <= size) return { items: rows, nextPageToken: "" };
  const items = rows.slice(0, size);
  return { items, nextPageToken: encodePageToken(keyOf(items[items.length - 1]!)) };
}
