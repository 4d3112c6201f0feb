import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import type { Readable } from "node:stream";

export interface SecretFlag {
  name: string;
  /** The file to read the value from; undefined for stdin. */
  file?: string;
}

/**
 * Parses `--secret NAME` (value on stdin) and `--secret NAME=@FILE`. A value on the
 * command line is refused: argv is visible to every user of the machine (ps, /proc).
 * Errors name the flag and the secret, never anything after "=".
 */
export function parseSecretFlags(flag: string, given: string[], fail: (message: string) => Error): SecretFlag[] {
  return given.map((g) => {
    const eq = g.indexOf("=");
    const name = eq < 0 ? g : g.slice(0, eq);
    if (!name) throw fail(`--${flag}: expected NAME (value on stdin) or NAME=@FILE`);
    if (eq < 0) return { name };
    const rest = g.slice(eq + 1);
    if (!rest.startsWith("@") || rest.length < 2) {
      throw fail(`--${flag} ${name}=…: a secret's value is never taken from the command line; pipe it on stdin (--${flag} ${name}) or read it from a file (--${flag} ${name}=@FILE)`);
    }
    return { name, file: rest.slice(1) };
  });
}

/** One trailing newline is what `echo` and editors add; it is never part of a secret. */
const chomp = (s: string) => s.replace(/\r?\n$/, "");

/** Reads the values: at most one secret comes from stdin (all of it), the rest from files. */
export async function readSecretValues(
  secrets: { name: string; file?: string; flag: string }[],
  cwd: string,
  stdin: Readable | undefined,
  fail: (message: string) => Error,
): Promise<Map<string, string>> {
  const fromStdin = secrets.filter((s) => s.file === undefined);
  if (fromStdin.length > 1) throw fail(`--${fromStdin[1]!.flag} ${fromStdin[1]!.name}: only one secret can come from stdin; give the others as NAME=@FILE`);
  const values = new Map<string, string>();
  for (const s of secrets) {
    if (s.file === undefined) continue;
    try {
      values.set(s.name, chomp(readFileSync(resolve(cwd, s.file), "utf8")));
    } catch (error) {
      throw fail(`--${s.flag} ${s.name}=@${s.file}: cannot read the file (${(error as NodeJS.ErrnoException).code ?? "error"})`);
    }
  }
  if (fromStdin[0]) {
    if (!stdin) throw fail(`--${fromStdin[0].flag} ${fromStdin[0].name}: no stdin to read the value from; use NAME=@FILE`);
    const chunks: Buffer[] = [];
    for await (const c of stdin) chunks.push(typeof c === "string" ? Buffer.from(c) : (c as Buffer));
    values.set(fromStdin[0].name, chomp(Buffer.concat(chunks).toString("utf8")));
  }
  return values;
}
