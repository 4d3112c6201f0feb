import { homedir } from "node:os";
import { join } from "node:path";

/** Where the daemon keeps its state unless told otherwise (XDG). Zod-free: every CLI call reads it. */
export function defaultDataDir(env: Record<string, string | undefined>): string {
  if (env.XDG_DATA_HOME) return join(env.XDG_DATA_HOME, "paddock");
  return join(env.HOME || homedir(), ".local", "share", "paddock");
}
