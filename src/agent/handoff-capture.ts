import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { asUser, type AgentUser } from "./agent-user.js";
import { agentConfigDirs } from "./runner-env.js";
import { sandboxGit } from "./sandbox-git.js";
import { EXPORT_REF, type ExportedWork } from "./export-work.js";
import { HANDOFF_CONVERSATION_REF, HANDOFF_WORK_REF, type HandoffFileInfo, type HandoffState } from "./runner-protocol.js";

/** Bounds on what a conversation may carry: files, and bytes in all. */
const MAX_SESSION_FILES = 16; // the manifest travels in a response header (16 KiB)
const MAX_SESSION_BYTES = 256 * 1024 * 1024;

/** What one capture took: the work to export, the handoff state, or both. */
export interface Captured {
  work?: ExportedWork;
  handoff?: Omit<HandoffState, "lastSeq">;
  /** Why the handoff state could not be taken; the work, when asked for, still was. */
  handoffError?: string;
}

/**
 * The agent's work and/or its working state, in one pass over its tree, without changing
 * its files or its index's content. The working tree (untracked files joined, ignored ones
 * left out) is read once, into a temporary index seeded from the agent's, whose stat data
 * lets `add -A` hash only what changed. From that one tree:
 *  - the work (`o.work`): HEAD, or a commit of the tree on top of it when the agent left
 *    something uncommitted; HEAD's branch moves to it (a second capture finds nothing new)
 *    and the commits the source lacks go into a git bundle;
 *  - the handoff state (`o.handoff`): a commit of the index (parent HEAD), a commit of the
 *    tree (parent the index commit) and a commit of the conversation's session files, in a
 *    bundle of their own.
 * Every git runs as the agent's user with hardened config: what the agent planted in its
 * repository (hooks, config) runs, if at all, as the agent. Bundles go to files of the
 * runner's, which the agent's user cannot write.
 */
export async function captureState(o: {
  workdir: string;
  user: AgentUser;
  home: string;
  bases: string[];
  work?: { runId: string; bundleFile: string };
  handoff?: { bundleFile: string; sessionId: string };
}): Promise<Captured> {
  const git = (args: string[], env: Record<string, string> = {}, input?: string) => sandboxGit(args, { cwd: o.workdir, user: o.user, home: o.home, env, input });
  const ident = ["-c", "user.name=paddock", "-c", "user.email=paddock@localhost"];
  // Where the agent stands, in one git: its git dir, its index, HEAD and HEAD's tree and branch.
  const [gitDir, indexFile, head, headTree, headRef] = (
    await git(["rev-parse", "--absolute-git-dir", "--path-format=absolute", "--git-path", "index", "HEAD^{commit}", "HEAD^{tree}", "--symbolic-full-name", "HEAD"])
  ).split("\n") as [string, string, string, string, string?];
  const branch = !headRef || headRef === "HEAD" ? "" : headRef.replace(/^refs\/heads\//, "");
  // The conversation's files and the index as the agent left it are committed beside the
  // tree's reading (handoff only).
  const conversation = o.handoff ? conversationOf(o.home, o.handoff.sessionId, o.user, gitDir, git) : null;
  conversation?.catch(() => undefined); // awaited below
  const indexCommit = o.handoff
    ? (async () => {
        const indexTree = await git(["write-tree"]).catch((error: Error) => {
          throw new Error(`the index cannot be taken (unresolved conflicts?): ${error.message}`);
        });
        return git([...ident, "commit-tree", indexTree, "-p", head, "-m", "paddock handoff: index"]);
      })()
    : null;
  indexCommit?.catch(() => undefined); // awaited below
  const tmpIndex = `${gitDir}/paddock-capture-${randomBytes(6).toString("hex")}.index`;
  const env = { GIT_INDEX_FILE: tmpIndex };
  let tree: string;
  /** The temporary index goes while the rest is made (awaited at the end). */
  let dropIndex: Promise<unknown>;
  try {
    // A copy made as the agent; an index that cannot be copied is read from HEAD instead.
    const copied = await runAs(o.user, ["cp", "--", indexFile, tmpIndex], true).then(() => true, () => false);
    if (!copied) await git(["read-tree", head], env);
    await git(["add", "-A"], env);
    tree = await git(["write-tree"], env);
  } finally {
    dropIndex = sandboxRm(tmpIndex, o.user);
  }
  const out: Captured = {};
  const refs: string[] = [];
  const handoffRefs: string[] = [];
  // The export's commit and the handoff's commits are made side by side: neither needs the other.
  const [work] = await Promise.all([
    !o.work || tree === headTree ? head : git([...ident, "commit-tree", tree, "-p", head, "-m", `paddock: uncommitted work left by run ${o.work.runId}`]),
    o.handoff &&
      (async () => {
        const index = await indexCommit!;
        const worktree = await git([...ident, "commit-tree", tree, "-p", index, "-m", "paddock handoff: working tree"]);
        const conv = await conversation!;
        refs.push(`update ${HANDOFF_WORK_REF} ${worktree}`, conv.commit ? `update ${HANDOFF_CONVERSATION_REF} ${conv.commit}` : `delete ${HANDOFF_CONVERSATION_REF}`);
        handoffRefs.push(HANDOFF_WORK_REF, ...(conv.commit ? [HANDOFF_CONVERSATION_REF] : []));
        out.handoff = { branch, head, index, worktree, conversation: conv.commit, sessionId: conv.files.length > 0 ? o.handoff!.sessionId : "", sourceCwd: o.workdir, files: conv.files };
      })().catch((error: Error) => {
        if (!o.work) throw error;
        out.handoffError = error.message;
      }),
  ]);
  // HEAD is a commit the source has, and nothing was left uncommitted: there is nothing to
  // bundle (nor a ref to name it by), so no git runs for it.
  const nothingNew = !!o.work && work === head && o.bases.includes(head);
  if (o.work && !nothingNew) {
    if (work !== head) refs.push(`update HEAD ${work} ${head}`);
    refs.push(`update ${EXPORT_REF} ${work}`);
  }
  // Every ref in one transaction: the branch moves together with what names the work.
  if (refs.length > 0) await git(["update-ref", "--stdin"], {}, refs.map((r) => r + "\n").join(""));
  if (nothingNew) out.work = { branch, head, bundled: false };
  const bundle = async (file: string, args: string[]) => {
    const fd = openSync(file, "w", 0o600);
    try {
      await sandboxGit(["bundle", "create", "--quiet", "-", ...args], { cwd: o.workdir, user: o.user, home: o.home, stdoutFd: fd });
    } finally {
      closeSync(fd);
    }
  };
  await Promise.all([
    o.work &&
      !nothingNew &&
      (async () => {
        // Commits the source has are left out; the host has them. Without a record, the
        // remote-tracking refs stand in (the agent could have moved those). Nothing left
        // to bundle (git refuses an empty bundle): the source has the work already.
        const not = o.bases.length > 0 ? o.bases : ["--remotes=origin"];
        const bundled = await bundle(o.work!.bundleFile, [EXPORT_REF, "--not", ...not]).then(
          () => true,
          (error: Error) => (/empty bundle/.test(error.message) ? false : Promise.reject(error)),
        );
        out.work = { branch, head: work, bundled };
      })(),
    out.handoff && bundle(o.handoff!.bundleFile, [...handoffRefs, ...notBut(o.bases, [out.handoff.index, out.handoff.worktree, out.handoff.conversation])]),
    dropIndex,
  ]);
  return out;
}

/**
 * `--not` the bases, but for the commits the bundle's refs name: a state captured again
 * unchanged within the same second is the very commit of an earlier capture (a base of a
 * run started from it), and git leaves out a ref whose commit it is told to exclude.
 */
function notBut(bases: readonly string[], named: readonly string[]): string[] {
  const not = bases.filter((b) => !named.includes(b));
  return not.length > 0 ? ["--not", ...not] : [];
}

/**
 * The agent's work, ready to leave the sandbox (POST /export): whatever it left
 * uncommitted becomes a commit on top of its HEAD (whichever branch that is on), and the
 * commits the source lacks go into a git bundle.
 */
export async function exportWork(o: { workdir: string; user: AgentUser; home: string; runId: string; bundleFile: string; bases: string[] }): Promise<ExportedWork> {
  return (await captureState({ workdir: o.workdir, user: o.user, home: o.home, bases: o.bases, work: { runId: o.runId, bundleFile: o.bundleFile } })).work!;
}

/** The agent's working state alone (POST /handoff): its tree and branch stay as they are. */
export async function captureHandoff(o: { workdir: string; user: AgentUser; home: string; bundleFile: string; bases: string[]; sessionId: string }): Promise<Omit<HandoffState, "lastSeq">> {
  return (await captureState({ workdir: o.workdir, user: o.user, home: o.home, bases: o.bases, handoff: { bundleFile: o.bundleFile, sessionId: o.sessionId } })).handoff!;
}

/**
 * The conversation's session files as a commit of their own: blobs read as the agent (a
 * symlink it planted reaches only what it could read anyway), in a tree built in an index
 * file of its own. No commit ("") when the session has no files.
 */
async function conversationOf(
  home: string,
  sessionId: string,
  user: AgentUser,
  gitDir: string,
  git: (args: string[], env?: Record<string, string>) => Promise<string>,
): Promise<{ commit: string; files: HandoffFileInfo[] }> {
  const files = sessionId ? await sessionFiles(home, sessionId, user) : [];
  if (files.length === 0) return { commit: "", files };
  const blobs: string[] = [];
  for (const f of files) blobs.push(await git(["hash-object", "-w", "--no-filters", "--", `${home}/${f.path}`]));
  const convIndex = `${gitDir}/paddock-conversation.index`;
  const env = { GIT_INDEX_FILE: convIndex };
  try {
    await git(["read-tree", "--empty"], env);
    for (const [i, f] of files.entries()) await git(["update-index", "--add", "--cacheinfo", `100644,${blobs[i]},${f.path}`], env);
    const ident = ["-c", "user.name=paddock", "-c", "user.email=paddock@localhost"];
    return { commit: await git([...ident, "commit-tree", await git(["write-tree"], env), "-m", "paddock handoff: conversation"]), files };
  } finally {
    await sandboxRm(convIndex, user);
  }
}

/**
 * The session's files in the agent's config dirs: Claude Code keeps
 * `.claude/projects/<cwd key>/<session>.jsonl`, Codex `.codex/sessions/…/rollout-…-<session>.jsonl`.
 * Found by a `find` run as the agent (never following its symlinks).
 */
async function sessionFiles(home: string, sessionId: string, user: AgentUser): Promise<HandoffFileInfo[]> {
  if (!/^[A-Za-z0-9._-]{1,200}$/.test(sessionId)) return [];
  const dirs = agentConfigDirs(home);
  const out = await runAs(user, ["find", dirs.CLAUDE_CONFIG_DIR, dirs.CODEX_HOME, "-maxdepth", "6", "-type", "f", "-name", `*${sessionId}*.jsonl`, "-size", `-${MAX_SESSION_BYTES / 1024}k`, "-printf", "%s\\0%p\\0"]).catch(() => "");
  const parts = out.split("\0");
  const files: HandoffFileInfo[] = [];
  let total = 0;
  for (let i = 0; i + 1 < parts.length && files.length < MAX_SESSION_FILES; i += 2) {
    const full = parts[i + 1]!;
    const size = Number(parts[i]);
    if (!full.startsWith(home + "/")) continue;
    const path = full.slice(home.length + 1);
    if (!safeRelativePath(path)) continue;
    total += size;
    if (total > MAX_SESSION_BYTES) break;
    files.push({ path, format: path.startsWith(".claude/projects/") ? "claude" : path.startsWith(".codex/") ? "codex" : "other" });
  }
  return files;
}

/** A relative path of plain components: no "..", ".", ".git", empty parts or control characters. */
export function safeRelativePath(path: string): boolean {
  if (!path || path.length > 4096 || path.startsWith("/") || /[\x00-\x1f\x7f\\]/.test(path)) return false;
  return path.split("/").every((c) => c !== "" && c !== "." && c !== ".." && c.toLowerCase().replace(/[. ]+$/, "") !== ".git");
}

/** Runs argv as the agent's user; resolves its stdout (with `checked`, only when it exits 0). */
function runAs(user: AgentUser, argv: string[], checked = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "ignore"], env: { PATH: process.env.PATH ?? "/usr/bin:/bin", LC_ALL: "C" }, ...asUser(user) });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out.length < 1 << 20 ? (out += d) : undefined));
    child.once("error", reject);
    child.once("close", (code) => (checked && code !== 0 ? reject(new Error(`${argv[0]} exited ${code}`)) : resolve(out)));
  });
}

function sandboxRm(path: string, user: AgentUser): Promise<unknown> {
  return runAs(user, ["rm", "-f", path]).catch(() => undefined);
}
