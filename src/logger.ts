import pino, { type Logger } from "pino";
import pretty from "pino-pretty";

/**
 * JSON lines on stdout, or pretty lines formatted in process when stdout is a terminal.
 * Never a pino transport (they run in worker threads, which crash inside the binary).
 */
export function createLogger(opts: { level: string; format: "auto" | "json" | "pretty"; isTty: boolean; destination?: NodeJS.WritableStream }): Logger {
  const usePretty = opts.format === "pretty" || (opts.format === "auto" && opts.isTty);
  const base = { level: opts.level, base: undefined, redact: { paths: ["token", "*.token", "authorization", "*.authorization"], censor: "[redacted]" } };
  if (usePretty) {
    return pino(base, pretty({ colorize: opts.isTty, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname", destination: opts.destination ?? 1, sync: true }));
  }
  return pino(base, opts.destination ?? pino.destination({ dest: 1, sync: false }));
}
