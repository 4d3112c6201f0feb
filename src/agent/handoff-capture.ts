import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { asUser, type AgentUser } from "./agent-user.js";
import { agentConfigDirs } from "./runner-env.js";
import { sandboxGit } from "./sandbox-git.js";
import { HANDOFF_CONVERSATION_REF, HANDOFF_WORK_REF, type HandoffFileInfo, type HandoffState } from "./runner-protocol.js";

/** Bounds on what a conversation may carry: files, and bytes in all. */
const MAX_SESSION_FILES = 16; // the manifest travels in a response header (16 KiB)
const MAX_SESSION_BYTES = 256 * 1024 * 1024;

/**
 * The agent's working state, taken without changing its tree or its index's content: a
 * commit of the index (parent HEAD), a commit of the working tree with its untracked files
 * (parent the index commit; ignored files stay out), built in a temporary index file, and a
 * commit holding the conversation's session files. All of it goes into a git bundle in the
 * runner's state. Every git runs as the agent's user with hardened config: what the agent
 * planted in its repository (hooks, config) runs, if at all, as the agent.
 */
export async function captureHandoff(o: {
  workdir: string;
  user: AgentUser;
  home: string;
  bundleFile: string;
  bases: string[];
  sessionId: string;
}): Promise<Omit<HandoffState, "lastSeq">> {
  const git = (args: string[], env: Record<string, string> = {}) => sandboxGit(args, { cwd: o.workdir, user: o.user, home: o.home, env });
  const ident = ["-c", "user.name=paddock", "-c", "user.email=paddock@localhost"];
  const head = await git(["rev-parse", "--verify", "HEAD^{commit}"]);
  const branch = await git(["symbolic-ref", "--quiet", "--short", "HEAD"]).catch(() => "");
  const indexTree = await git(["write-tree"]).catch((error: Error) => {
    throw new Error(`the index cannot be taken (unresolved conflicts?): ${error.message}`);
  });
  const index = await git([...ident, "commit-tree", indexTree, "-p", head, "-m", "paddock handoff: index"]);
  // The working tree: the index's entries, updated, deleted and joined by untracked files,
  // in an index file of its own so the agent's stays as it was.
  const gitDir = await git(["rev-parse", "--absolute-git-dir"]);
  const tmpIndex = `${gitDir}/paddock-handoff.index`;
  const env = { GIT_INDEX_FILE: tmpIndex };
  let worktree: string;
  try {
    // Seeded with a copy of the agent's index (made as the agent), whose stat data lets
    // `add -A` hash only what changed; an index that cannot be copied is read from its tree.
    const copied = await runAs(o.user, ["cp", "--", await git(["rev-parse", "--path-format=absolute", "--git-path", "index"]), tmpIndex], true).then(() => true, () => false);
    if (!copied) await git(["read-tree", indexTree], env);
    await git(["add", "-A"], env);
    worktree = await git([...ident, "commit-tree", await git(["write-tree"], env), "-p", index, "-m", "paddock handoff: working tree"]);
  } finally {
    await sandboxRm(tmpIndex, o.user);
  }
  await git(["update-ref", HANDOFF_WORK_REF, worktree]);
  const refs = [HANDOFF_WORK_REF];
  const files = o.sessionId ? await sessionFiles(o.home, o.sessionId, o.user) : [];
  let conversation = "";
  if (files.length > 0) {
    // The files as blobs in a tree of their own, read as the agent: a symlink it planted
    // reaches only what it could read anyway.
    const entries: string[] = [];
    for (const f of files) {
      const blob = await git(["hash-object", "-w", "--no-filters", "--", `${o.home}/${f.path}`]);
      entries.push(`100644 blob ${blob}\t${f.path}`);
    }
    const convIndex = `${gitDir}/paddock-conversation.index`;
    try {
      await git(["read-tree", "--empty"], { GIT_INDEX_FILE: convIndex });
      for (const line of entries) {
        const [meta, path] = line.split("\t") as [string, string];
        await git(["update-index", "--add", "--cacheinfo", `100644,${meta.split(" ")[2]},${path}`], { GIT_INDEX_FILE: convIndex });
      }
      conversation = await git([...ident, "commit-tree", await git(["write-tree"], { GIT_INDEX_FILE: convIndex }), "-m", "paddock handoff: conversation"]);
    } finally {
      await sandboxRm(convIndex, o.user);
    }
    await git(["update-ref", HANDOFF_CONVERSATION_REF, conversation]);
    refs.push(HANDOFF_CONVERSATION_REF);
  } else {
    await git(["update-ref", "-d", HANDOFF_CONVERSATION_REF]).catch(() => undefined);
  }
  const fd = openSync(o.bundleFile, "w", 0o600);
  try {
    const not = o.bases.length > 0 ? ["--not", ...o.bases] : [];
    await sandboxGit(["bundle", "create", "--quiet", "-", ...refs, ...not], { cwd: o.workdir, user: o.user, home: o.home, stdoutFd: fd });
  } finally {
    closeSync(fd);
  }
  return { branch, head, index, worktree, conversation, sessionId: files.length > 0 ? o.sessionId : "", sourceCwd: o.workdir, files };
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
