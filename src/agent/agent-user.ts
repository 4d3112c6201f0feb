import { spawn } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

/** Who the agent runs as: its own uid and gid, or null for the runner's own user. */
export type AgentUser = { uid: number; gid: number } | null;

/** Spawn options that drop to the agent's user (libuv calls setgroups, setgid, setuid). */
export function asUser(user: AgentUser): { uid?: number; gid?: number } {
  return user ? { uid: user.uid, gid: user.gid } : {};
}

/**
 * Pids of every live process whose real uid is `uid`, from /proc. Zombies are left out:
 * they are dead already, and one whose parent does not reap it stays in /proc for good.
 */
export async function processesOf(uid: number): Promise<number[]> {
  // Read at once, not one after another: a local run's start waits on this scan.
  const names = (await readdir("/proc").catch(() => [] as string[])).filter((n) => /^\d+$/.test(n));
  const statuses = await Promise.all(names.map((name) => readFile(`/proc/${name}/status`, "utf8").catch(() => "")));
  const pids: number[] = [];
  statuses.forEach((status, i) => {
    const m = /^Uid:\s+(\d+)/m.exec(status);
    if (m && Number(m[1]) === uid && !/^State:\s+Z/m.test(status)) pids.push(Number(names[i]));
  });
  return pids;
}

/**
 * Kills every process of the agent's user, however it daemonised (double fork, setsid):
 * kill(-1) as that user reaches exactly the processes it may signal, i.e. its own. Repeated
 * until /proc shows none, since a fork can race one sweep. Only for a uid of its own: the
 * runner's user must never be swept.
 */
export async function killAllOf(user: { uid: number; gid: number }, signal: AbortSignal = AbortSignal.timeout(10_000)): Promise<void> {
  if (user.uid === 0 || user.uid === process.getuid?.()) throw new Error(`refusing to kill every process of uid ${user.uid}`);
  for (let round = 0; !signal.aborted; round++) {
    if ((await processesOf(user.uid)).length === 0) return;
    await new Promise<void>((resolve) => {
      const sweep = spawn("/bin/sh", ["-c", "kill -9 -1"], { uid: user.uid, gid: user.gid, stdio: "ignore" });
      sweep.once("error", () => resolve());
      sweep.once("exit", () => resolve());
    });
    await sleep(Math.min(5 * 2 ** round, 200)); // the kernel reaps asynchronously
  }
}
