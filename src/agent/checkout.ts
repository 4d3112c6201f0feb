import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";

/**
 * Git's environment in a sandbox: the mounted source and a workspace copied out are owned
 * by another uid than ours, which git refuses without safe.directory; and never a prompt.
 */
export function sandboxGitEnv(): NodeJS.ProcessEnv {
  return { ...process.env, GIT_CONFIG_COUNT: "1", GIT_CONFIG_KEY_0: "safe.directory", GIT_CONFIG_VALUE_0: "*", GIT_TERMINAL_PROMPT: "0" };
}

export interface CheckoutOptions {
  /** A git repository the sandbox can read (bind-mounted read-only by the docker provider). */
  source: string;
  workdir: string;
  /** Branch to start from; empty for the source's HEAD. */
  branch: string;
  resultBranch: string;
  log: (line: string) => void;
}

/**
 * Puts the repository in the workdir on the result branch before the runner listens:
 * a fresh clone, or — in a sandbox started from a snapshot, which already has one — a
 * fetch of what changed since. Throws with git's message when it cannot.
 */
export function checkout(opts: CheckoutOptions): void {
  const env = sandboxGitEnv();
  const git = (...args: string[]) => execFileSync("git", args, { cwd: opts.workdir, env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
  if (existsSync(join(opts.workdir, ".git"))) {
    if (git("branch", "--list", opts.resultBranch)) {
      opts.log(`workspace already on ${opts.resultBranch}`);
      return; // a restarted runner: the agent's work is here already
    }
    opts.log("workspace from a snapshot: fetching what changed");
    git("fetch", "--quiet", "--prune", opts.source, "+refs/heads/*:refs/remotes/origin/*");
  } else {
    opts.log("cloning the repository into the sandbox");
    execFileSync("git", ["clone", "--quiet", "--no-hardlinks", opts.source, opts.workdir], { env, stdio: ["ignore", "pipe", "pipe"] });
    git("remote", "set-url", "origin", opts.source);
  }
  const start = opts.branch ? `origin/${opts.branch}` : "origin/HEAD";
  try {
    git("rev-parse", "--verify", "--quiet", `${start}^{commit}`);
  } catch {
    throw new Error(`branch ${JSON.stringify(opts.branch)} not found in the repository`);
  }
  git("checkout", "--quiet", "-B", opts.resultBranch, start);
  opts.log(`checked out ${opts.branch || "the default branch"} on ${opts.resultBranch}`);
}
