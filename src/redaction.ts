/**
 * Redaction of secret values from log text. Pure: it sees only the secrets it is given.
 *
 * Besides the value itself it replaces the forms an agent most easily prints by accident
 * or on purpose: base64 (standard and URL alphabets, also inside a larger base64 blob at
 * any byte alignment, and wrapped at 76 or 64 columns as `base64` and `openssl` do), hex
 * in either case, and each line of a multi-line secret. It cannot catch every
 * transformation (see README, "What redaction cannot catch").
 */

export interface RedactedSecret {
  name: string;
  value: string;
}

/** Shorter derived forms would match ordinary text too often to be worth replacing. */
const MIN_DERIVED = 8;
/** A line of a multi-line secret shorter than this (a brace, a blank) is not secret by itself. */
const MIN_LINE = 4;
/** Column widths at which common tools wrap base64 (`base64`, `openssl base64`). */
const WRAP_WIDTHS = [76, 64];

/** A function replacing every known form of each secret with `[secret:NAME]`. */
export function redactor(secrets: readonly RedactedSecret[]): (text: string) => string {
  const byPattern = new Map<string, string>();
  // Longer secrets first, so a secret containing another is replaced whole under its own name.
  for (const s of [...secrets].sort((a, b) => b.value.length - a.value.length)) {
    if (s.value.length === 0) continue;
    for (const p of patternsOf(s.value)) if (!byPattern.has(p)) byPattern.set(p, s.name);
  }
  // Longest pattern first: a full encoding is replaced before its shorter aligned middle,
  // so no leftover characters of it remain.
  const patterns = [...byPattern.entries()].sort((a, b) => b[0].length - a[0].length);
  if (patterns.length === 0) return (t) => t;
  return (text) => {
    let out = text;
    for (const [p, name] of patterns) if (out.includes(p)) out = out.split(p).join(`[secret:${name}]`);
    return out;
  };
}

/** Every form of one secret value that is replaced, exact value included. */
export function patternsOf(value: string): Set<string> {
  const out = new Set<string>([value]);
  const bytes = Buffer.from(value, "utf8");
  const hex = bytes.toString("hex");
  add(out, hex, MIN_DERIVED);
  add(out, hex.toUpperCase(), MIN_DERIVED);
  for (const encoding of ["base64", "base64url"] as const) {
    const whole = bytes.toString(encoding);
    add(out, whole, MIN_DERIVED);
    add(out, whole.replace(/=+$/, ""), MIN_DERIVED);
    for (const middle of alignedBase64(bytes, encoding)) add(out, middle, MIN_DERIVED);
  }
  const standard = bytes.toString("base64");
  for (const width of WRAP_WIDTHS) {
    if (standard.length <= width) continue;
    for (let i = 0; i < standard.length; i += width) add(out, standard.slice(i, i + width), MIN_DERIVED);
  }
  const lines = value.split(/\r?\n/);
  if (lines.length > 1) for (const line of lines) add(out, line, MIN_LINE);
  return out;
}

/**
 * The base64 characters of `bytes` that do not depend on what surrounds them, when they
 * start 0, 1 or 2 bytes into a 3-byte group of a larger encoded blob. Character i encodes
 * bits [6i, 6i+6) of the blob; it is the value's alone when those bits lie inside it.
 */
function alignedBase64(bytes: Buffer, encoding: "base64" | "base64url"): string[] {
  const out: string[] = [];
  for (let k = 0; k < 3; k++) {
    const encoded = Buffer.concat([Buffer.alloc(k), bytes]).toString(encoding).replace(/=+$/, "");
    const start = Math.ceil((8 * k) / 6);
    const end = Math.floor((8 * (k + bytes.length)) / 6);
    out.push(encoded.slice(start, end));
  }
  return out;
}

function add(set: Set<string>, pattern: string, min: number): void {
  if (pattern.length >= min) set.add(pattern);
}
