import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sandboxGitEnv } from "./checkout.js";

export interface ExportedWork {
  branch: string;
  head: string;
  /** A git bundle of what the branch has beyond the source's branches; null when nothing. */
  bundle: Buffer | null;
}

/**
 * The agent's work, ready to leave the sandbox: whatever it left uncommitted becomes a
 * commit on its branch, and only the objects the source lacks go into the bundle.
 */
export function exportWork(workdir: string, runId: string): ExportedWork {
  const env = sandboxGitEnv();
  const git = (...args: string[]) => execFileSync("git", args, { cwd: workdir, env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
  git("add", "-A");
  if (git("status", "--porcelain")) {
    git("-c", "user.name=paddock", "-c", "user.email=paddock@localhost", "commit", "--quiet", "--no-verify", "-m", `paddock: uncommitted work left by run ${runId}`);
  }
  const branch = git("rev-parse", "--abbrev-ref", "HEAD");
  const head = git("rev-parse", "HEAD");
  const dir = mkdtempSync(join(tmpdir(), "paddock-bundle-"));
  try {
    const file = join(dir, "work.bundle");
    try {
      git("bundle", "create", "--quiet", file, `refs/heads/${branch}`, "--not", "--remotes=origin");
    } catch {
      return { branch, head, bundle: null }; // no commits beyond the source: nothing to carry
    }
    return { branch, head, bundle: readFileSync(file) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
