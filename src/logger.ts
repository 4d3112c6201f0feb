import pino, { type Logger } from "pino";

export type LogFormat = "auto" | "json" | "pretty" | "journal";

/** syslog priorities (sd-daemon(3)) of pino's levels: trace and debug 7, info 6, warn 4, error 3, fatal 2. */
export function journalPriority(level: number): number {
  if (level >= 60) return 2;
  if (level >= 50) return 3;
  if (level >= 40) return 4;
  if (level >= 30) return 6;
  return 7;
}

/**
 * JSON lines on stdout, or pretty lines formatted in process when stdout is a terminal.
 * For the journal, each JSON line starts with its syslog priority ("<6>{…}"): journald
 * strips the prefix and files the line under that priority, so `journalctl -p warning`
 * works. Never a pino transport (they run in worker threads, which crash inside the binary).
 * pino-pretty is loaded only for pretty lines: a daemon logging JSON does without its memory.
 */
export async function createLogger(opts: { level: string; format: LogFormat; isTty: boolean; isJournal?: boolean; destination?: NodeJS.WritableStream }): Promise<Logger> {
  const format = opts.format === "auto" ? (opts.isTty ? "pretty" : opts.isJournal ? "journal" : "json") : opts.format;
  const base = { level: opts.level, base: undefined, redact: { paths: ["token", "*.token", "authorization", "*.authorization"], censor: "[redacted]" } };
  if (format === "pretty") {
    const { default: pretty } = await import("pino-pretty");
    return pino(base, pretty({ colorize: opts.isTty, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname", destination: opts.destination ?? 1, sync: true }));
  }
  const out = opts.destination ?? pino.destination({ dest: 1, sync: false });
  if (format === "json") return pino(base, out);
  // pino writes one whole line per write(); its level is the first field.
  const journal = {
    write(line: string) {
      const level = Number(/^\{"level":(\d+)/.exec(line)?.[1] ?? 30);
      return out.write(`<${journalPriority(level)}>${line}`);
    },
  };
  return pino(base, journal);
}
