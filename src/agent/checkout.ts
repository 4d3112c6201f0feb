import { execFile, execFileSync } from "node:child_process";
import { chownSync, createReadStream, existsSync, lchownSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { promisify } from "node:util";
import { dirname, join } from "node:path";
import { asUser, type AgentUser } from "./agent-user.js";
import { safeRelativePath } from "./handoff-capture.js";
import { SETTLED_FILE, type HandoffStart } from "./runner-protocol.js";
import { cloneArgs, HARDENED_GIT_CONFIG, hardenedGitEnv } from "./sandbox-git.js";
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
  /** What a warm pool's runner made ready before its claim (prepareWorkspace); null: nothing. */
  prepared?: PreparedWorkspace | null;
  /**
   * The workspace being cloned from the source (without a work tree) by the provider that
   * started this runner (clonedByProvider): awaited instead of a clone of the runner's own.
   */
  cloned?: Promise<void> | null;
}

/**
 * A workspace made ready before any run came (a warm pool's member, before its claim): the
 * source's branches fetched as they were, the source's default branch checked out
 * (detached) and handed to the agent's user, the index refreshed. Nothing of a run in it.
 */
export interface PreparedWorkspace {
  /** The commit checked out, detached. */
  head: string;
  /** refs/remotes/origin/* (and origin/HEAD, resolved) to their commits, as fetched. */
  refs: Record<string, string>;
}

const MARKER = "checked-out";
const COMMIT = /^[0-9a-f]{40}([0-9a-f]{24})?$/;
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
export async function checkout(o: CheckoutOptions): Promise<void> {
  o.cloned?.catch(() => undefined); // awaited below, unless the checkout needs no clone
  mkdirSync(o.stateDir, { recursive: true, mode: 0o700 });
  const marker = join(o.stateDir, MARKER);
  if (existsSync(marker) && readFileSync(marker, "utf8") === o.runId) {
    o.log(`workspace already checked out on ${o.resultBranch}`);
    return;
  }
  if (o.prepared && !o.handoff && claimPrepared(o, o.prepared)) {
    writeFileSync(marker, o.runId, { mode: 0o600 });
    o.log(`checked out ${o.branch || "the default branch"} on ${o.resultBranch} (made ready before the claim)`);
    return;
  }
  const settled = o.handoff || o.cloned ? null : settledSnapshot(o);
  if (settled && startBranch(o, settled.start, settled.bases)) {
    writeFileSync(marker, o.runId, { mode: 0o600 });
    o.log(`checked out ${o.branch || "the default branch"} on ${o.resultBranch} (the snapshot's workspace, the source unchanged since)`);
    return;
  }
  const git = sandboxGit(o.workdir, o.home);
  // Where the time went, for the log line at the end.
  const steps: string[] = [];
  let last = Date.now();
  const step = (name: string) => {
    const now = Date.now();
    steps.push(`${name} ${now - last} ms`);
    last = now;
  };
  const fromSnapshot = !o.cloned && existsSync(join(o.workdir, ".git"));
  // The agent's user checks out when it has one of its own (not for a handoff, whose state
  // root restores): the files git writes are the agent's from the start, with no chown of
  // each and no index refresh after. A fresh clone is taken without a work tree and all of
  // git's files handed over; in a snapshot's workspace everything is the agent's already
  // but what root's fetch (the source may be readable by root alone) just wrote into .git.
  const asAgent = o.user && !o.handoff ? o.user : null;
  if (o.cloned) {
    await o.cloned;
    step("the provider's clone");
  } else {
    if (fromSnapshot) {
      // A snapshot's workspace: made by this runner before any agent ran in it.
      o.log("workspace from a snapshot: fetching what changed");
      refreshIndex(o.workdir, o.home, asAgent);
      step("index refresh");
    } else {
      o.log("cloning the repository into the sandbox");
    }
    await fetchOrClone(o, { noCheckout: !!asAgent });
    step(fromSnapshot ? "fetch" : "clone");
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
  const origin = originRefs(git, o.workdir);
  const found = o.handoff ? revParses(git, `${start}^{commit}`) : origin.has(`refs/remotes/${start}`);
  if (!found) throw new Error(o.handoff ? `the handoff's commit ${start} is not in the repository` : `branch ${JSON.stringify(o.branch)} not found in the repository`);
  const bases = [...new Set([...origin.values(), ...(o.handoff ? [o.handoff.worktree] : [])])];
  writeFileSync(join(o.stateDir, BASES_FILE), bases.slice(0, 5000).join("\n"), { mode: 0o600 });
  // --force: a snapshot's workspace may hold the setup script's edits to tracked files;
  // the run starts from the commit, keeping what setup left untracked (dependencies…).
  const checkoutArgs = ["checkout", "--quiet", "--force", "-B", o.resultBranch, start];
  let checkedOutAsAgent = false;
  if (asAgent) {
    try {
      if (fromSnapshot) handOver(join(o.workdir, ".git"), asAgent, { rootsOnly: true });
      else handOver(o.workdir, asAgent);
      execFileSync("git", [...HARDENED_GIT_CONFIG, ...checkoutArgs], { cwd: o.workdir, env: hardenedGitEnv(o.home), stdio: ["ignore", "pipe", "pipe"], ...asUser(asAgent) });
      checkedOutAsAgent = true;
    } catch {
      /* something the agent cannot write is in the way: root checks out below, and hands everything over after */
    }
  }
  if (!checkedOutAsAgent) {
    git(...checkoutArgs);
    if (o.handoff) restoreHandoff(o, o.handoff, git);
  }
  step("checkout");
  if (o.user && !checkedOutAsAgent) {
    // Not hardlinked (--no-hardlinks), so handing the files over touches nothing of the
    // source's; in a snapshot's workspace the rest is the agent's already.
    handOverRootsFiles(o.user, o.workdir, o.home);
    step("hand-over");
  }
  writeFileSync(marker, o.runId, { mode: 0o600 });
  o.log(`checked out ${o.branch || "the default branch"} on ${o.resultBranch} (${steps.join(", ")})`);
}

type Git = (...args: string[]) => string;

/** Git in the workspace, hardened (no hooks, no config of the repository's that runs anything); its output, trimmed. */
function sandboxGit(workdir: string, home: string): Git {
  const env = hardenedGitEnv(home);
  return (...args) => execFileSync("git", [...HARDENED_GIT_CONFIG, ...args], { cwd: workdir, env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
}

/**
 * The source's branches into the workspace as refs/remotes/origin/*: fetched into a
 * snapshot's workspace (which has the repository), else cloned — without a work tree when
 * the caller checks out as another user.
 */
async function fetchOrClone(o: { source: string; workdir: string; home: string }, opts: { noCheckout: boolean }): Promise<void> {
  // Not blocking: the runner loads the rest of itself while git works.
  const git = (args: string[], cwd?: string) => execFileAsync("git", [...HARDENED_GIT_CONFIG, ...args], { cwd, env: hardenedGitEnv(o.home), maxBuffer: 16 * 1024 * 1024 });
  if (existsSync(join(o.workdir, ".git"))) await git(["fetch", "--quiet", "--prune", o.source, "+refs/heads/*:refs/remotes/origin/*"], o.workdir);
  else await git(cloneArgs(o.source, o.workdir, opts));
}

/**
 * The provider's word on its clone of the workspace (PADDOCK_CLONED_FD): resolves on "ok",
 * rejects with what it said otherwise — or, when the pipe closes with nothing said (the
 * daemon died while git cloned), with that: the workspace then holds no finished clone.
 */
export function clonedByProvider(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let said = "";
    const pipe = createReadStream("", { fd, encoding: "utf8" });
    pipe.on("data", (chunk) => {
      if (said.length < 64 * 1024) said += chunk;
    });
    pipe.once("error", reject);
    pipe.once("end", () => {
      const word = said.trim();
      if (word === "ok") resolve();
      else reject(new Error(word || "the daemon's clone of the repository did not finish (the daemon stopped)"));
    });
  });
}

const execFileAsync = promisify(execFile);

/**
 * refs/remotes/origin/* (origin/HEAD resolved) to their commits: read from the files of a
 * repository this runner just wrote (clone or fetch, no agent yet), else listed by git.
 */
function originRefs(git: Git, workdir: string): Map<string, string> {
  const files = refsFromFiles(join(workdir, ".git"), "refs/remotes/origin/");
  if (files) {
    const resolved = new Map<string, string>();
    for (const [name, value] of files) {
      const commit = value.startsWith("ref: ") ? files.get(value.slice(5)) : value;
      if (!commit || !COMMIT.test(commit)) return originRefsOf(git); // a link to a link, or outside origin: git resolves it
      resolved.set(name, commit);
    }
    return resolved;
  }
  return originRefsOf(git);
}

function originRefsOf(git: Git): Map<string, string> {
  const refs = new Map<string, string>();
  for (const line of git("for-each-ref", "--format=%(refname) %(objectname)", "refs/remotes/origin").split("\n")) {
    const [name, commit] = line.split(" ");
    if (name && commit) refs.set(name, commit);
  }
  return refs;
}

/**
 * What root (git, just now) wrote in the workspace, handed to the agent's user: only
 * root's files — elsewhere a chown of every file copies each one up out of the image's
 * layer (seconds). The index is then refreshed (new owners changed ctimes), so the first
 * `git add -A` hashes only real edits, and .git's files written by the refresh handed over.
 */
function handOverRootsFiles(user: { uid: number; gid: number }, workdir: string, home: string): void {
  handOver(workdir, user, { rootsOnly: true });
  refreshIndex(workdir, home);
  handOver(join(workdir, ".git"), user, { rootsOnly: true });
}

/**
 * `chown -R` without a process: `dir` and everything under it to the agent's user (with
 * rootsOnly, only what root owns, as `--from=0`). Links are changed themselves, never
 * followed, nor walked into.
 */
function handOver(dir: string, user: { uid: number; gid: number }, opts: { rootsOnly?: boolean } = {}): void {
  const visit = (path: string, isDirectory: boolean, uid: number) => {
    if (!opts.rootsOnly || uid === 0) lchownSync(path, user.uid, user.gid);
    if (!isDirectory) return;
    for (const entry of readdirSync(path, { withFileTypes: true })) {
      const child = join(path, entry.name);
      visit(child, entry.isDirectory(), opts.rootsOnly ? lstatSync(child).uid : -1);
    }
  };
  const top = lstatSync(dir);
  visit(dir, top.isDirectory(), top.uid);
}

function revParses(git: Git, rev: string): boolean {
  try {
    git("rev-parse", "--verify", "--quiet", rev);
    return true;
  } catch {
    return false;
  }
}

/**
 * A warm pool's runner, before its claim: the repository work no run is needed for. The
 * workspace (a snapshot's, or a fresh clone of the source mount) gets the source's branches
 * as they are now, and the source's default branch checked out detached and handed to the
 * agent's user, so that a claim starting from that commit only names its branch
 * (claimPrepared). Null when something failed: the claim then does the whole checkout.
 */
export async function prepareWorkspace(o: { source: string; workdir: string; user: AgentUser; home: string; log: (line: string) => void }): Promise<PreparedWorkspace | null> {
  const git = sandboxGit(o.workdir, o.home);
  try {
    if (existsSync(join(o.workdir, ".git"))) refreshIndex(o.workdir, o.home);
    await fetchOrClone(o, { noCheckout: false });
    git("checkout", "--quiet", "--force", "--detach", "origin/HEAD");
    const refs = Object.fromEntries(originRefs(git, o.workdir));
    const head = git("rev-parse", "--verify", "HEAD^{commit}");
    if (o.user) handOverRootsFiles(o.user, o.workdir, o.home);
    return { head, refs };
  } catch (error) {
    o.log(`the workspace could not be made ready before the claim (the claim checks out in full): ${((error as { stderr?: string }).stderr || (error as Error).message).trim()}`);
    return null;
  }
}

/**
 * The claim of a prepared workspace, without a git process, when it can be: the run starts
 * from the commit already checked out, and the source's ref for it (read from its files)
 * still names that commit — the source's other branches may have moved since, which only
 * a full checkout would fetch. Then the result branch is made there and HEAD points at it,
 * as `git checkout -B` would (the tree and index are the same), written by the agent's user
 * as its files are. False (nothing changed) when any of that does not hold.
 */
function claimPrepared(o: CheckoutOptions, p: PreparedWorkspace): boolean {
  const start = p.refs[o.branch ? `refs/remotes/origin/${o.branch}` : "refs/remotes/origin/HEAD"];
  if (!start || start !== p.head || sourceCommit(o.source, o.branch) !== start) return false;
  try {
    if (readFileSync(join(o.workdir, ".git", "HEAD"), "utf8").trim() !== p.head) return false;
  } catch {
    return false;
  }
  return startBranch(o, start, Object.values(p.refs));
}

/**
 * A snapshot's workspace that needs nothing of git to start from: settled (its HEAD, index
 * and tracked files are the commit its settling recorded), and the branch the run starts
 * from names that commit both in the workspace and in the source now — read from both
 * repositories' files. The source's other branches stay as the snapshot fetched them, as
 * in a warm pool's claim. Null when any of that does not hold: the checkout fetches.
 */
function settledSnapshot(o: CheckoutOptions): { start: string; bases: string[] } | null {
  const gitDir = join(o.workdir, ".git");
  try {
    if (!lstatSync(gitDir).isDirectory() || !plainRefsRepository(gitDir)) return null;
    const settled = readFileSync(join(gitDir, SETTLED_FILE), "utf8").trim();
    if (!COMMIT.test(settled) || headCommit(gitDir) !== settled) return null;
    const origin = refsFromFiles(gitDir, "refs/remotes/origin/");
    const sourceDir = sourceGitDir(o.source);
    if (!origin || !sourceDir) return null;
    const startRef = o.branch ? `refs/remotes/origin/${o.branch}` : /^ref: (refs\/remotes\/origin\/\S+)$/.exec(origin.get("refs/remotes/origin/HEAD") ?? "")?.[1];
    if (!startRef || !plainRefName(startRef) || origin.get(startRef) !== settled) return null;
    if (readRef(sourceDir, `refs/heads/${startRef.slice("refs/remotes/origin/".length)}`) !== settled) return null;
    return { start: settled, bases: [settled, ...[...origin.values()].filter((c) => COMMIT.test(c))] };
  } catch {
    return null;
  }
}

/** The commit a repository's HEAD names (through its branch, or detached unless `detached` is false), read from its files. */
function headCommit(gitDir: string, detached = true): string | undefined {
  const head = readFileSync(join(gitDir, "HEAD"), "utf8").trim();
  if (COMMIT.test(head)) return detached ? head : undefined;
  const ref = /^ref: (refs\/heads\/\S+)$/.exec(head)?.[1];
  return ref && plainRefName(ref) ? readRef(gitDir, ref) : undefined;
}

/**
 * The run's branch made at `start` and HEAD pointed at it, as `git checkout -B` would where
 * the tree and index are `start`'s already, written by the agent's user as its files are;
 * `bases` (the source's commits) recorded for the export. False, with nothing changed,
 * when the repository or the branch's name is anything but plain.
 */
function startBranch(o: CheckoutOptions, start: string, bases: string[]): boolean {
  const gitDir = join(o.workdir, ".git");
  if (!plainRefName(o.resultBranch) || !plainRefsRepository(gitDir)) return false;
  // Written as root: every directory on the way is a real one, never a link planted to lead elsewhere.
  if (![gitDir, join(gitDir, "refs"), join(gitDir, "refs", "heads")].every(realDirectory)) return false;
  try {
    return writeStartBranch(o, gitDir, start, bases);
  } catch {
    return false; // something in the way (a lock, a file where a directory goes): git deals with it
  }
}

function realDirectory(path: string): boolean {
  try {
    return lstatSync(path).isDirectory();
  } catch {
    return false;
  }
}

function writeStartBranch(o: CheckoutOptions, gitDir: string, start: string, bases: string[]): boolean {
  const ref = join(gitDir, "refs", "heads", ...o.resultBranch.split("/"));
  const own = (path: string) => {
    if (o.user) chownSync(path, o.user.uid, o.user.gid);
  };
  // Directories of the branch's name (paddock/…), each the agent's as git would have made it as the agent.
  let dir = join(gitDir, "refs", "heads");
  for (const part of o.resultBranch.split("/").slice(0, -1)) {
    dir = join(dir, part);
    if (lstatSync(dir, { throwIfNoEntry: false })) {
      if (!realDirectory(dir)) return false; // a branch named like the directory (git says why), or a link
      continue;
    }
    mkdirSync(dir, { mode: 0o755 });
    own(dir);
  }
  if (lstatSync(ref, { throwIfNoEntry: false })) return false;
  const write = (path: string, content: string) => {
    writeFileSync(path + ".lock", content, { mode: 0o644, flag: "wx" });
    own(path + ".lock");
    renameSync(path + ".lock", path);
  };
  write(ref, `${start}\n`);
  write(join(gitDir, "HEAD"), `ref: refs/heads/${o.resultBranch}\n`);
  writeFileSync(join(o.stateDir, BASES_FILE), [...new Set(bases)].slice(0, 5000).join("\n"), { mode: 0o600 });
  return true;
}

/** A branch name git takes as it is, checked conservatively: anything unusual goes through git. */
function plainRefName(name: string): boolean {
  return /^[A-Za-z0-9_-][A-Za-z0-9._-]*(\/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$/.test(name) && !name.includes("..") && !/\.lock(\/|$)/.test(name) && !name.endsWith(".");
}

/** Whether the repository keeps its refs as files (not reftable), the layout written directly. */
function plainRefsRepository(gitDir: string): boolean {
  if (existsSync(join(gitDir, "reftable"))) return false;
  try {
    return !/^\s*refstorage\s*=/im.test(readFileSync(join(gitDir, "config"), "utf8"));
  } catch {
    return false;
  }
}

/**
 * The commit a branch of the source repository names (its HEAD's branch for ""), read from
 * its files: a loose ref, else packed-refs. Undefined for anything else (reftable, a
 * detached HEAD, a worktree's .git file): the caller fetches instead.
 */
export function sourceCommit(source: string, branch: string): string | undefined {
  try {
    const gitDir = sourceGitDir(source);
    if (!gitDir) return undefined;
    if (!branch) return headCommit(gitDir, false);
    const ref = `refs/heads/${branch}`;
    return plainRefName(ref) ? readRef(gitDir, ref) : undefined;
  } catch {
    return undefined;
  }
}

/** The source's git dir (a repository or a bare one) when it keeps its refs as files; else undefined. */
function sourceGitDir(source: string): string | undefined {
  const gitDir = existsSync(join(source, ".git")) ? join(source, ".git") : source;
  return lstatSync(gitDir).isDirectory() && existsSync(join(gitDir, "objects")) && plainRefsRepository(gitDir) ? gitDir : undefined;
}

/** One ref's commit, read from its files: its loose file, else packed-refs. */
function readRef(gitDir: string, ref: string): string | undefined {
  const loose = join(gitDir, ...ref.split("/"));
  if (existsSync(loose)) {
    const text = readFileSync(loose, "utf8").trim();
    return COMMIT.test(text) ? text : undefined;
  }
  return packedRefs(gitDir).get(ref);
}

function packedRefs(gitDir: string, prefix = ""): Map<string, string> {
  const refs = new Map<string, string>();
  const packed = existsSync(join(gitDir, "packed-refs")) ? readFileSync(join(gitDir, "packed-refs"), "utf8") : "";
  for (const line of packed.split("\n")) {
    const sp = line.indexOf(" ");
    const [commit, ref] = [line.slice(0, sp), line.slice(sp + 1)];
    if (sp > 0 && ref.startsWith(prefix) && COMMIT.test(commit)) refs.set(ref, commit);
  }
  return refs;
}

/**
 * Every ref under `prefix` ("refs/heads/"…) read from the repository's files: packed-refs,
 * loose refs over them; a symbolic one as "ref: <target>". Undefined for anything git
 * would have to say (a lock held, an unreadable or unknown file, over 5,000 refs).
 */
function refsFromFiles(gitDir: string, prefix: string): Map<string, string> | undefined {
  const refs = packedRefs(gitDir, prefix);
  const walk = (dir: string, name: string, depth: number): boolean => {
    if (!existsSync(dir)) return true;
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (depth > 16 || !walk(full, `${name}${entry.name}/`, depth + 1)) return false;
        continue;
      }
      if (!entry.isFile() || entry.name.endsWith(".lock") || refs.size >= 5000) return false;
      const text = readFileSync(full, "utf8").trim();
      if (!COMMIT.test(text) && !/^ref: refs\/\S+$/.test(text)) return false;
      refs.set(`${name}${entry.name}`, text);
    }
    return true;
  };
  return walk(join(gitDir, ...prefix.split("/").filter(Boolean)), prefix, 0) ? refs : undefined;
}

/**
 * In a new container every file of a snapshot's workspace looks changed to git (new
 * inodes): refreshing the index hashes them once (0.6 s for 16 MB here), where a forced
 * checkout rewrites them all through the image's layer (4 s). A pool runner does it before
 * its claim. Nothing changes but the index's stat data; differing files are left as they are.
 */
export function refreshIndex(workdir: string, home: string, user: AgentUser = null): void {
  if (!existsSync(join(workdir, ".git"))) return;
  try {
    execFileSync("git", [...HARDENED_GIT_CONFIG, "update-index", "-q", "--refresh"], { cwd: workdir, env: hardenedGitEnv(home), stdio: ["ignore", "ignore", "ignore"], ...asUser(user) });
  } catch {
    /* exits 1 when files differ from the index: the checkout deals with them */
  }
}

/**
 * The handed-in state on top of its head, as the user had it: the working tree (untracked
 * files added, deleted ones gone), then the index, which leaves staged work staged and the
 * rest unstaged; and the conversation's files in the agent's home, moved to this workspace.
 */
function restoreHandoff(o: CheckoutOptions, h: HandoffStart, git: Git): void {
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
  if (o.user && existsSync(o.home)) handOver(o.home, o.user);
  o.log(`restored the handed-in working state (${h.worktree.slice(0, 12)}) and ${h.files.length} session file(s)`);
}
