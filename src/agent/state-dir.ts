import { readdirSync, rmSync } from "node:fs";
import { basename, dirname, isAbsolute } from "node:path";

/**
 * Removes every entry beside the runner's own state directory, returning their names. A
 * Modal sandbox keeps the runner's state in its filesystem (docker keeps it in a volume,
 * outside a commit), so one made from a snapshot carries the state of the run the
 * snapshot's sandbox served — its event log, a pool member's claim. The runner drops it
 * before it serves anything (PADDOCK_OTHER_STATES=drop; the directory above is the
 * runner's alone there). Links are removed, never followed.
 */
export function dropOtherStates(stateDir: string): string[] {
  if (!isAbsolute(stateDir) || dirname(stateDir) === stateDir) throw new Error(`PADDOCK_STATE_DIR ${JSON.stringify(stateDir)} is not an absolute path below a directory`);
  const own = basename(stateDir);
  let entries: string[];
  try {
    entries = readdirSync(dirname(stateDir));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
  const others = entries.filter((name) => name !== own);
  for (const name of others) rmSync(`${dirname(stateDir)}/${name}`, { recursive: true, force: true });
  return others;
}
