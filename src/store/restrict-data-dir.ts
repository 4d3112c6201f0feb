import { chmod } from "node:fs/promises";
import { join } from "node:path";

/**
 * Files in the data dir that hold tokens or keys. Their makers create them 0600; listed
 * here so installs made before that (or under a loose umask) are fixed at start.
 * paddock.db and its WAL files are openDatabase()'s, which fixes them on every open.
 */
export const SECRET_FILES = ["admin-token", "secrets.key", "egress.key", "broker-ca.key", "sandbox-token.key", "daemon.lock", "daemon.pid"] as const;

/** Data dir 0700 and its secret files 0600, whatever the umask or an older paddock left. */
export async function restrictDataDir(dataDir: string): Promise<void> {
  await chmod(dataDir, 0o700);
  for (const name of SECRET_FILES) {
    await chmod(join(dataDir, name), 0o600).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "ENOENT") throw error;
    });
  }
}
