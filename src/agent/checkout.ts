import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { AgentUser } from "./agent-user.js";
import { safeRelativePath } from "./handoff-capture.js";
import type { HandoffStart } from "./runner-protocol.js";
import { HARDENED_GIT_CONFIG, hardenedGitEnv } from "./sandbox-git.js";
import { rewriteSessionFile } from "./session-files.js";

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
  /** A run from a handoff: the state to restore, fetched into the source by the daemon. */
  handoff?: HandoffStart | null;
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
  const fromSnapshot = existsSync(join(o.workdir, ".git"));
  // A fresh clone for a user of its own is checked out as that user: its files are the
  // user's from the start, with no chown of each and no index refresh after (two processes
  // and a pass over the tree fewer on every cold start).
  const asAgent = o.user && !fromSnapshot && !o.handoff ? o.user : null;
  if (fromSnapshot) {
    // A snapshot's workspace: made by this runner before any agent ran in it.
    o.log("workspace from a snapshot: fetching what changed");
    refreshIndex(o.workdir, o.home);
    git("fetch", "--quiet", "--prune", o.source, "+refs/heads/*:refs/remotes/origin/*");
  } else {
    o.log("cloning the repository into the sandbox");
    const clone = ["clone", "--quiet", "--no-hardlinks", ...(asAgent ? ["--no-checkout"] : []), o.source, o.workdir];
    execFileSync("git", [...HARDENED_GIT_CONFIG, ...clone], { env, stdio: ["ignore", "pipe", "pipe"] });
  }
  const start = o.handoff ? o.handoff.head : o.branch ? `origin/${o.branch}` : "origin/HEAD";
  if (o.handoff) {
    const h = o.handoff;
    const refs = [`+${h.refPrefix}/work:refs/paddock/handoff-start`, ...(h.conversation ? [`+${h.refPrefix}/conversation:refs/paddock/handoff-conversation`] : [])];
    git("fetch", "--quiet", "--no-tags", o.source, ...refs);
  }
  // What the source had, kept where the agent cannot write: the export leaves these out of
  // the bundle, whatever the agent does to its remote-tracking refs. The same listing says
  // whether the branch to start from exists (a handoff's commit is checked by rev-parse).
  const origin = new Map(
    git("for-each-ref", "--format=%(refname) %(objectname)", "refs/remotes/origin")
      .split("\n")
      .filter(Boolean)
      .map((line) => line.split(" ") as [string, string]),
  );
  const found = o.handoff ? revParses(git, `${start}^{commit}`) : origin.has(`refs/remotes/${start}`);
  if (!found) throw new Error(o.handoff ? `the handoff's commit ${start} is not in the repository` : `branch ${JSON.stringify(o.branch)} not found in the repository`);
  const bases = [...new Set([...origin.values(), ...(o.handoff ? [o.handoff.worktree] : [])])];
  writeFileSync(join(o.stateDir, BASES_FILE), bases.slice(0, 5000).join("\n"), { mode: 0o600 });
  if (asAgent) {
    // Only git's own files so far (the clone made no work tree): all of them become the
    // agent's, then git writes the work tree and index as the agent.
    execFileSync("chown", ["-R", `${asAgent.uid}:${asAgent.gid}`, o.workdir], { stdio: ["ignore", "ignore", "pipe"] });
    execFileSync("git", [...HARDENED_GIT_CONFIG, "checkout", "--quiet", "--force", "-B", o.resultBranch, start], { cwd: o.workdir, env, stdio: ["ignore", "pipe", "pipe"], uid: asAgent.uid, gid: asAgent.gid });
  } else {
    // --force: a snapshot's workspace may hold the setup script's edits to tracked files;
    // the run starts from the commit, keeping what setup left untracked (dependencies…).
    git("checkout", "--quiet", "--force", "-B", o.resultBranch, start);
    if (o.handoff) restoreHandoff(o, o.handoff, git);
  }
  if (o.user && !asAgent) {
    // Not hardlinked (--no-hardlinks), so handing the files over touches nothing of the
    // source's. Only what root (git, just now) owns: in a snapshot's workspace the rest is
    // the agent's already, and a chown of every file copies each one up out of the image's
    // layer (seconds). The index is then refreshed (new owners changed ctimes), so the first
    // `git add -A` — at the export, or the handoff's capture — hashes only real edits.
    const handOver = (dir: string) => execFileSync("chown", ["-R", "--from=0", `${o.user!.uid}:${o.user!.gid}`, dir], { stdio: ["ignore", "ignore", "pipe"] });
    handOver(o.workdir);
    refreshIndex(o.workdir, o.home);
    handOver(join(o.workdir, ".git"));
  }
  writeFileSync(marker, o.runId, { mode: 0o600 });
  o.log(`checked out ${o.branch || "the default branch"} on ${o.resultBranch}`);
}

function revParses(git: (...args: string[]) => string, rev: string): boolean {
  try {
    git("rev-parse", "--verify", "--quiet", rev);
    return true;
  } catch {
    return false;
  }
}

/**
 * In a new container every file of a snapshot's workspace looks changed to git (new
 * inodes): refreshing the index hashes them once (0.6 s for 16 MB here), where a forced
 * checkout rewrites them all through the image's layer (4 s). A pool runner does it before
 * its claim. Nothing changes but the index's stat data; differing files are left as they are.
 */
export function refreshIndex(workdir: string, home: string): void {
  if (!existsSync(join(workdir, ".git"))) return;
  try {
    execFileSync("git", [...HARDENED_GIT_CONFIG, "update-index", "-q", "--refresh"], { cwd: workdir, env: hardenedGitEnv(home), stdio: ["ignore", "ignore", "ignore"] });
  } catch {
    /* exits 1 when files differ from the index: the checkout deals with them */
  }
}

/**
 * The handed-in state on top of its head, as the user had it: the working tree (untracked
 * files added, deleted ones gone), then the index, which leaves staged work staged and the
 * rest unstaged; and the conversation's files in the agent's home, moved to this workspace.
 */
function restoreHandoff(o: CheckoutOptions, h: HandoffStart, git: (...args: string[]) => string): void {
  const parent = (c: string) => git("rev-parse", "--verify", `${c}^1`);
  if (parent(h.worktree) !== h.index || parent(h.index) !== h.head) throw new Error("the handoff's commits are not chained head <- index <- worktree");
  git("read-tree", "-m", "-u", "HEAD", h.worktree);
  git("read-tree", h.index);
  try {
    git("update-index", "-q", "--refresh");
  } catch {
    /* exits 1 when files differ from the index: they do, that is the unstaged work */
  }
  for (const f of h.conversation ? h.files : []) {
    if (!safeRelativePath(f.path)) throw new Error(`the handoff names a session file outside the agent's home: ${JSON.stringify(f.path)}`);
    const content = execFileSync("git", [...HARDENED_GIT_CONFIG, "cat-file", "blob", `${h.conversation}:${f.path}`], { cwd: o.workdir, env: hardenedGitEnv(o.home), stdio: ["ignore", "pipe", "pipe"], maxBuffer: 512 * 1024 * 1024 });
    const moved = rewriteSessionFile(f, content, h.sourceCwd, o.workdir);
    if (!safeRelativePath(moved.path)) continue;
    const file = join(o.home, moved.path);
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeFileSync(file, moved.content, { mode: 0o600 });
  }
  // The home is new (the agent never ran here): all of it becomes the agent's.
  if (o.user && existsSync(o.home)) execFileSync("chown", ["-R", `${o.user.uid}:${o.user.gid}`, o.home], { stdio: ["ignore", "ignore", "pipe"] });
  o.log(`restored the handed-in working state (${h.worktree.slice(0, 12)}) and ${h.files.length} session file(s)`);
}
