import { closeSync, openSync } from "node:fs";
import type { AgentUser } from "./agent-user.js";
import { sandboxGit } from "./sandbox-git.js";

export interface ExportedWork {
  /** The branch the agent's HEAD was on at the end; "" for a detached HEAD. */
  branch: string;
  /** The commit that is the agent's work: HEAD, after any uncommitted work was committed. */
  head: string;
  /** Whether `bundleFile` now holds a bundle (false: HEAD adds nothing to the source). */
  bundled: boolean;
}

/** The ref the bundle carries the work under; the host maps it onto the run's branch. */
export const EXPORT_REF = "refs/paddock/export";

/**
 * The agent's work, ready to leave the sandbox, made inside the sandbox as the agent's
 * user with hardened git: whatever it left uncommitted becomes a commit on top of its HEAD
 * (whichever branch that is on), and the commits the source lacks go into a git bundle.
 */
export async function exportWork(o: { workdir: string; user: AgentUser; home: string; runId: string; bundleFile: string; bases: string[] }): Promise<ExportedWork> {
  const git = (...args: string[]) => sandboxGit(args, { cwd: o.workdir, user: o.user, home: o.home });
  await git("add", "-A");
  if (await git("status", "--porcelain")) {
    await git("-c", "user.name=paddock", "-c", "user.email=paddock@localhost", "commit", "--quiet", "--no-verify", "-m", `paddock: uncommitted work left by run ${o.runId}`);
  }
  const head = await git("rev-parse", "--verify", "HEAD^{commit}");
  const branch = await git("symbolic-ref", "--quiet", "--short", "HEAD").catch(() => "");
  await git("update-ref", EXPORT_REF, head);
  // Commits the source has are left out; the host has them. Without a record, the
  // remote-tracking refs stand in (the agent could have moved those).
  const not = o.bases.length > 0 ? o.bases : ["--remotes=origin"];
  const ahead = Number(await git("rev-list", "--count", EXPORT_REF, "--not", ...not));
  if (!ahead) return { branch, head, bundled: false };
  // The bundle goes to a file of the runner's, which the agent's user cannot write.
  const fd = openSync(o.bundleFile, "w", 0o600);
  try {
    await sandboxGit(["bundle", "create", "--quiet", "-", EXPORT_REF, "--not", ...not], { cwd: o.workdir, user: o.user, home: o.home, stdoutFd: fd });
  } finally {
    closeSync(fd);
  }
  return { branch, head, bundled: true };
}
