import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AgentUser } from "./agent-user.js";
import { HARDENED_GIT_CONFIG, hardenedGitEnv } from "./sandbox-git.js";

export interface CheckoutOptions {
  runId: string;
  /** A git repository the runner can read (bind-mounted read-only by the docker provider). */
  source: string;
  workdir: string;
  /** The runner's own directory: the marker saying this run's checkout is done lives here. */
  stateDir: string;
  /** Branch to start from; empty for the source's HEAD. */
  branch: string;
  resultBranch: string;
  user: AgentUser;
  home: string;
  log: (line: string) => void;
}

const MARKER = "checked-out";
/** The source's commits at checkout, one per line. */
export const BASES_FILE = "base-commits";

/** Whether this run's checkout is done (its marker, in the runner's state, says so). */
export function isCheckedOut(stateDir: string, runId: string): boolean {
  const marker = join(stateDir, MARKER);
  return existsSync(marker) && readFileSync(marker, "utf8") === runId;
}

/**
 * Puts the repository in the workdir on the result branch before the runner listens: a
 * fresh clone, or — in a sandbox started from a snapshot, which has one already — a fetch of
 * what changed since. The workdir is then handed to the agent's user. Once done for this
 * run (the marker, in the runner's state, says so), a restarted runner never runs git in
 * the workdir again: by then the agent may have written to it. Throws with git's message.
 */
export function checkout(o: CheckoutOptions): void {
  mkdirSync(o.stateDir, { recursive: true, mode: 0o700 });
  const marker = join(o.stateDir, MARKER);
  if (existsSync(marker) && readFileSync(marker, "utf8") === o.runId) {
    o.log(`workspace already checked out on ${o.resultBranch}`);
    return;
  }
  const env = hardenedGitEnv(o.home);
  const git = (...args: string[]) => execFileSync("git", [...HARDENED_GIT_CONFIG, ...args], { cwd: o.workdir, env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
  if (existsSync(join(o.workdir, ".git"))) {
    // A snapshot's workspace: made by this runner before any agent ran in it.
    o.log("workspace from a snapshot: fetching what changed");
    git("fetch", "--quiet", "--prune", o.source, "+refs/heads/*:refs/remotes/origin/*");
  } else {
    o.log("cloning the repository into the sandbox");
    execFileSync("git", [...HARDENED_GIT_CONFIG, "clone", "--quiet", "--no-hardlinks", o.source, o.workdir], { env, stdio: ["ignore", "pipe", "pipe"] });
  }
  const start = o.branch ? `origin/${o.branch}` : "origin/HEAD";
  try {
    git("rev-parse", "--verify", "--quiet", `${start}^{commit}`);
  } catch {
    throw new Error(`branch ${JSON.stringify(o.branch)} not found in the repository`);
  }
  // --force: a snapshot's workspace may hold the setup script's edits to tracked files;
  // the run starts from the commit, keeping what setup left untracked (dependencies…).
  git("checkout", "--quiet", "--force", "-B", o.resultBranch, start);
  // What the source had, kept where the agent cannot write: the export leaves these out of
  // the bundle, whatever the agent does to its remote-tracking refs.
  const bases = [...new Set(git("for-each-ref", "--format=%(objectname)", "refs/remotes/origin").split("\n").filter(Boolean))];
  writeFileSync(join(o.stateDir, BASES_FILE), bases.slice(0, 5000).join("\n"), { mode: 0o600 });
  // Not hardlinked (--no-hardlinks), so handing every file over touches nothing of the source's.
  if (o.user) execFileSync("chown", ["-R", `${o.user.uid}:${o.user.gid}`, o.workdir], { stdio: ["ignore", "ignore", "pipe"] });
  writeFileSync(marker, o.runId, { mode: 0o600 });
  o.log(`checked out ${o.branch || "the default branch"} on ${o.resultBranch}`);
}
