/** Exit codes of every paddock command; small on purpose, so any entry point can import it. */
export const EXIT = { ok: 0, failed: 1, usage: 2, notFound: 3, precondition: 4, unavailable: 5 } as const;

export function isParseArgsError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("ERR_PARSE_ARGS");
}
