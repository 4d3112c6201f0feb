import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFileSync, createReadStream, createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { finished } from "node:stream/promises";
import { safeRelativePath } from "../agent/handoff-capture.js";
import { HANDOFF_CONVERSATION_REF, HANDOFF_WORK_REF, type HandoffFileInfo } from "../agent/runner-protocol.js";
import { rewriteSessionFile } from "../agent/session-files.js";
import { HandoffManifestSchema, RunMode, TaskRunService, type HandoffManifest, type UploadHandoffRequest } from "../gen/paddock/v1/task_run_pb.js";
import { unbundleChecked } from "../sandbox/checked-bundle.js";
import type { HandoffManifestData } from "../runs/handoffs.js";
import type { Clients } from "./client.js";
import { bearer } from "./client.js";

/**
 * The user's side of a handoff. Whatever came from a sandbox is data: git here runs with
 * hooks off and every fetched object checked, only plumbing touches the checkout, and the
 * only refs that change are the run's own (refs/heads/paddock/<run>, refs/paddock/handoffs/<run>/…).
 */
const HOST_GIT = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"];
const SHA = /^[0-9a-f]{40}([0-9a-f]{24})?$/;

export class HandoffError extends ConnectError {}

function fail(message: string, code = Code.FailedPrecondition): never {
  throw new HandoffError(message, code);
}

function git(cwd: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  return gitRaw(cwd, args, env).then((b) => b.toString("utf8").trim());
}

function gitRaw(cwd: string, args: string[], env: Record<string, string> = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    execFile("git", [...HOST_GIT, ...args], { cwd, env: { ...process.env, GIT_TERMINAL_PROMPT: "0", ...env }, encoding: "buffer", maxBuffer: 1024 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) return reject(new HandoffError(`git ${args[0]} failed: ${String(stderr).trim().split("\n").slice(-3).join("; ") || error.message}`, Code.FailedPrecondition));
      resolve(stdout);
    });
  });
}

/** The checkout's top directory and git dir. */
async function checkoutOf(dir: string): Promise<{ top: string; gitDir: string }> {
  if (!existsSync(dir)) fail(`${dir} does not exist`, Code.InvalidArgument);
  const top = await git(dir, ["rev-parse", "--show-toplevel"]).catch(() => fail(`${dir} is not in a git checkout`, Code.InvalidArgument));
  return { top, gitDir: await git(top, ["rev-parse", "--absolute-git-dir"]) };
}

/** Refuses a checkout with any change, naming the files. */
async function requireClean(top: string): Promise<void> {
  const status = (await gitRaw(top, ["status", "--porcelain=v1", "-z", "--untracked-files=all"])).toString("utf8");
  const files = status.split("\0").filter(Boolean).map((e) => e.slice(3));
  if (files.length > 0) {
    const shown = files.slice(0, 20).join(", ") + (files.length > 20 ? ` and ${files.length - 20} more` : "");
    fail(`the checkout at ${top} has changes (${shown}); commit, stash or remove them first: a handoff needs a clean destination`);
  }
}

/** The largest bundle this side takes (PADDOCK_HANDOFF_MAX_BYTES, default 2 GiB). */
function maxBytes(env: Record<string, string | undefined>): number {
  const v = Number(env.PADDOCK_HANDOFF_MAX_BYTES);
  return Number.isFinite(v) && v > 0 ? v : 2 * 1024 ** 3;
}

export interface PullResult {
  top: string;
  branch: string;
  manifest: HandoffManifest;
  /** Where the conversation's files and the manifest were put. */
  conversationDir: string;
}

/**
 * `paddock handoff pull`: the run's state into the user's clean checkout of the same
 * repository, on branch paddock/<run>, with staged work staged, unstaged work unstaged
 * and untracked files untracked; its conversation into <git dir>/paddock/handoff/<run>.
 */
export async function pullHandoff(c: Clients, runId: string, dir: string, env: Record<string, string | undefined>, signal: AbortSignal): Promise<PullResult> {
  const { top, gitDir } = await checkoutOf(dir);
  await requireClean(top);
  const tmp = join(tmpdir(), `paddock-handoff-${randomBytes(6).toString("hex")}.bundle`);
  try {
    let manifest: HandoffManifest | undefined;
    const out = createWriteStream(tmp, { mode: 0o600 });
    let size = 0;
    try {
      for await (const res of c.runs.exportRun({ runId }, { signal, timeoutMs: 0 })) {
        if (res.part.case === "manifest") manifest = res.part.value;
        else if (res.part.case === "chunk") {
          size += res.part.value.length;
          if (size > maxBytes(env)) fail(`the run's handoff is over ${maxBytes(env)} bytes (PADDOCK_HANDOFF_MAX_BYTES)`, Code.ResourceExhausted);
          if (!out.write(res.part.value)) await new Promise<void>((r) => out.once("drain", () => r()));
        }
      }
    } finally {
      out.end();
      await finished(out).catch(() => undefined);
    }
    if (!manifest) fail("the daemon sent no handoff manifest", Code.Internal);
    const branch = `paddock/${runId}`;
    await applyHandoff({ top, gitDir, bundle: tmp, manifest, runId, branch });
    const conversationDir = await saveConversation(top, gitDir, manifest, runId, branch);
    return { top, branch, manifest, conversationDir };
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * Checks and applies a handoff bundle in a clean checkout. Exported for the hostile-input
 * tests: every check here stands between a sandbox's bytes and the user's tree.
 */
export async function applyHandoff(o: { top: string; gitDir: string; bundle: string; manifest: HandoffManifest; runId: string; branch: string }): Promise<void> {
  const m = o.manifest;
  for (const [name, v] of [["head", m.headCommit], ["index", m.indexCommit], ["worktree", m.worktreeCommit]] as const) if (!SHA.test(v)) fail(`the handoff's ${name} commit ${JSON.stringify(v.slice(0, 80))} is not a commit id`, Code.DataLoss);
  if (m.conversationCommit && !SHA.test(m.conversationCommit)) fail("the handoff's conversation commit is not a commit id", Code.DataLoss);
  for (const f of m.sessionFiles) if (!safeRelativePath(f.path)) fail(`the handoff names a session file outside the agent's home: ${JSON.stringify(f.path.slice(0, 200))}`, Code.DataLoss);
  const prefix = `refs/paddock/handoffs/${o.runId}`;
  const refs: Record<string, string> = { [HANDOFF_WORK_REF]: `${prefix}/work`, ...(m.conversationCommit ? { [HANDOFF_CONVERSATION_REF]: `${prefix}/conversation` } : {}) };
  await unbundleChecked({ cwd: o.top, bundle: o.bundle, refs, git: (args) => git(o.top, args) }).catch((error: Error) => {
    if (/lacks .* commit\(s\) the bundle builds on/.test(error.message)) fail(`this checkout lacks commits the run started from; fetch the repository first (${error.message})`);
    fail(`the handoff bundle was refused: ${error.message}`, Code.DataLoss);
  });
  const at = (rev: string) => git(o.top, ["rev-parse", "--verify", "--quiet", rev]).catch(() => "");
  if ((await at(`${prefix}/work`)) !== m.worktreeCommit || (await at(`${m.worktreeCommit}^1`)) !== m.indexCommit || (await at(`${m.indexCommit}^1`)) !== m.headCommit) {
    fail("the handoff bundle does not hold the commits its manifest names (head <- index <- worktree)", Code.DataLoss);
  }
  // Paths git would take are checked by fsck already; this says plainly which one is wrong.
  for (const commit of [m.indexCommit, m.worktreeCommit]) {
    const paths = (await gitRaw(o.top, ["ls-tree", "-r", "-z", "--name-only", "--full-tree", commit])).toString("utf8").split("\0").filter(Boolean);
    const bad = paths.find((p) => !safeRelativePath(p));
    if (bad !== undefined) fail(`the handoff holds a path outside the repository: ${JSON.stringify(bad.slice(0, 200))}`, Code.DataLoss);
  }
  const ref = `refs/heads/${o.branch}`;
  const old = await at(ref);
  if (old && old !== m.headCommit) {
    const ff = await git(o.top, ["merge-base", "--is-ancestor", old, m.headCommit]).then(() => true, () => false);
    if (!ff) fail(`branch ${o.branch} exists here at ${old.slice(0, 12)} and the run's ${m.headCommit.slice(0, 12)} does not fast-forward it; rename or delete it first`);
  }
  // The switch, in plumbing: tree and files to the worktree commit (untracked files come,
  // deleted ones go), HEAD onto the run's branch, then the index to the index commit.
  const head = await at("HEAD");
  await git(o.top, head ? ["read-tree", "-m", "-u", head, m.worktreeCommit] : ["read-tree", "-m", "-u", m.worktreeCommit]);
  await git(o.top, ["update-ref", "-m", `paddock handoff pull ${o.runId}`, ref, m.headCommit, old || ""]);
  await git(o.top, ["symbolic-ref", "HEAD", ref]);
  await git(o.top, ["read-tree", m.indexCommit]);
  await git(o.top, ["update-index", "-q", "--refresh"]).catch(() => undefined); // exits 1 while files differ from the index: the unstaged work
}

/** The conversation's files, moved to this checkout's directory, and the manifest, for a later push or a local resume. */
async function saveConversation(top: string, gitDir: string, m: HandoffManifest, runId: string, branch: string): Promise<string> {
  const dir = join(gitDir, "paddock", "handoff", runId);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, "home"), { recursive: true, mode: 0o700 });
  const files: HandoffFileInfo[] = [];
  for (const f of m.conversationCommit ? m.sessionFiles : []) {
    const info = { path: f.path, format: f.format as HandoffFileInfo["format"] };
    const content = await gitRaw(top, ["cat-file", "blob", `${m.conversationCommit}:${f.path}`]);
    const moved = rewriteSessionFile(info, content, m.sourceCwd, top);
    if (!safeRelativePath(moved.path)) continue;
    mkdirSync(dirname(join(dir, "home", moved.path)), { recursive: true, mode: 0o700 });
    writeFileSync(join(dir, "home", moved.path), moved.content, { mode: 0o600 });
    files.push({ path: moved.path, format: info.format });
  }
  const saved = { ...manifestJson(m), branch, sourceCwd: top, files, pulledAt: Date.now() };
  writeFileSync(join(dir, "manifest.json"), JSON.stringify(saved, null, 2) + "\n", { mode: 0o600 });
  return dir;
}

/** What a pull keeps of the handoff's manifest (the daemon's own record of it, less its commits), and when. */
type SavedManifest = Pick<HandoffManifestData, "runId" | "taskId" | "branch" | "agentKind" | "agentCommand" | "sessionId" | "sourceCwd" | "lastEventSeq" | "files"> & { pulledAt: number };

function manifestJson(m: HandoffManifest): Omit<SavedManifest, "pulledAt"> {
  return {
    runId: m.runId,
    taskId: m.taskId,
    branch: m.branch,
    agentKind: m.agentKind,
    agentCommand: m.agentCommand,
    sessionId: m.acpSessionId,
    sourceCwd: m.sourceCwd,
    lastEventSeq: Number(m.lastEventSeq),
    files: m.sessionFiles.map((f) => ({ path: f.path, format: f.format as HandoffFileInfo["format"] })),
  };
}

/** The last pull whose branch is `branch`, if any. */
function lastPull(gitDir: string, branch: string): { manifest: SavedManifest; dir: string } | null {
  const root = join(gitDir, "paddock", "handoff");
  let best: { manifest: SavedManifest; dir: string } | null = null;
  for (const name of existsSync(root) ? readdirSync(root) : []) {
    try {
      const manifest = JSON.parse(readFileSync(join(root, name, "manifest.json"), "utf8")) as SavedManifest;
      if (manifest.branch === branch && (!best || manifest.pulledAt > best.manifest.pulledAt)) best = { manifest, dir: join(root, name) };
    } catch {
      /* not a pull */
    }
  }
  return best;
}

export interface PushOptions {
  dir: string;
  taskId: string;
  provider: string;
  prompt: string;
  interactive: boolean;
  /** The new run's agent command; empty for the pulled run's agent. */
  agentCommand: string[];
  env: Record<string, string | undefined>;
  signal: AbortSignal;
}

/**
 * `paddock handoff push`: the checkout's branch and exact working state (and, after a
 * pull on this branch, the conversation) start a new run of the task. The checkout is
 * left as it was: the index and worktree commits are made with temporary index files.
 */
export async function pushHandoff(c: Clients, token: string | undefined, o: PushOptions) {
  const { top, gitDir } = await checkoutOf(o.dir);
  const branch = await git(top, ["symbolic-ref", "--quiet", "--short", "HEAD"]).catch(() => "");
  const head = await git(top, ["rev-parse", "--verify", "HEAD^{commit}"]).catch(() => fail("the checkout has no commit yet", Code.InvalidArgument));
  const pulled = branch ? lastPull(gitDir, branch) : null;
  const taskId = o.taskId || pulled?.manifest.taskId || "";
  if (!taskId) fail("no task: give --task (this branch was not pulled from a run)", Code.InvalidArgument);
  const ident = { GIT_AUTHOR_NAME: "paddock", GIT_AUTHOR_EMAIL: "paddock@localhost", GIT_COMMITTER_NAME: "paddock", GIT_COMMITTER_EMAIL: "paddock@localhost" };
  const scratch = join(tmpdir(), `paddock-push-${randomBytes(6).toString("hex")}`);
  mkdirSync(scratch, { mode: 0o700 });
  const refs: string[] = [];
  try {
    const indexFile = join(scratch, "index");
    if (existsSync(join(gitDir, "index"))) copyFileSync(join(gitDir, "index"), indexFile);
    else await git(top, ["read-tree", head], { GIT_INDEX_FILE: indexFile });
    const idx = { GIT_INDEX_FILE: indexFile };
    const indexTree = await git(top, ["write-tree"], idx).catch(() => fail("the index has unresolved conflicts; resolve them first"));
    const index = await git(top, ["commit-tree", indexTree, "-p", head, "-m", "paddock handoff: index"], ident);
    await git(top, ["add", "-A"], idx);
    const worktree = await git(top, ["commit-tree", await git(top, ["write-tree"], idx), "-p", index, "-m", "paddock handoff: working tree"], ident);
    let conversation = "";
    const files: HandoffFileInfo[] = [];
    if (pulled) {
      const conv = { GIT_INDEX_FILE: join(scratch, "conversation.index") };
      await git(top, ["read-tree", "--empty"], conv);
      for (const f of pulled.manifest.files) {
        const file = join(pulled.dir, "home", f.path);
        if (!safeRelativePath(f.path) || !existsSync(file)) continue;
        const blob = await git(top, ["hash-object", "-w", "--no-filters", "--", file]);
        await git(top, ["update-index", "--add", "--cacheinfo", `100644,${blob},${f.path}`], conv);
        files.push(f);
      }
      if (files.length > 0) conversation = await git(top, ["commit-tree", await git(top, ["write-tree"], conv), "-m", "paddock handoff: conversation"], ident);
    }
    await git(top, ["update-ref", HANDOFF_WORK_REF, worktree]);
    refs.push(HANDOFF_WORK_REF);
    if (conversation) {
      await git(top, ["update-ref", HANDOFF_CONVERSATION_REF, conversation]);
      refs.push(HANDOFF_CONVERSATION_REF);
    }
    const bundle = join(scratch, "handoff.bundle");
    const remotes = await git(top, ["for-each-ref", "--format=%(objectname)", "refs/remotes"]);
    await git(top, ["bundle", "create", "--quiet", bundle, ...refs, ...(remotes ? ["--not", "--remotes"] : [])]);
    const manifest = create(HandoffManifestSchema, {
      runId: pulled?.manifest.runId ?? "",
      taskId,
      branch,
      headCommit: head,
      indexCommit: index,
      worktreeCommit: worktree,
      conversationCommit: conversation,
      agentKind: pulled?.manifest.agentKind ?? "",
      agentCommand: pulled?.manifest.agentCommand ?? [],
      acpSessionId: conversation ? (pulled?.manifest.sessionId ?? "") : "",
      sourceCwd: top,
      lastEventSeq: BigInt(pulled?.manifest.lastEventSeq ?? 0),
      sessionFiles: files,
      bundleBytes: BigInt(statSync(bundle).size),
    });
    if (statSync(bundle).size > maxBytes(o.env)) fail(`the working state is ${statSync(bundle).size} bytes, over ${maxBytes(o.env)} (PADDOCK_HANDOFF_MAX_BYTES)`, Code.ResourceExhausted);
    const upload = await streamingClient(c.address, token).uploadHandoff(requests(manifest, bundle), { signal: o.signal, timeoutMs: 0 });
    const { run } = await c.runs.startRun(
      { taskId, provider: o.provider, agentCommand: o.agentCommand, handoff: { uploadId: upload.uploadId, prompt: o.prompt }, ...(o.interactive ? { mode: RunMode.INTERACTIVE } : {}) },
      { signal: o.signal },
    );
    return { run: run!, manifest, uploadBytes: Number(upload.sizeBytes), fromRun: pulled?.manifest.runId ?? "" };
  } finally {
    for (const ref of refs) await git(top, ["update-ref", "-d", ref]).catch(() => undefined);
    rmSync(scratch, { recursive: true, force: true });
  }
}

async function* requests(manifest: HandoffManifest, bundle: string): AsyncGenerator<UploadHandoffRequest> {
  yield { $typeName: "paddock.v1.UploadHandoffRequest", part: { case: "manifest", value: manifest } };
  for await (const chunk of createReadStream(bundle, { highWaterMark: 256 * 1024 })) {
    yield { $typeName: "paddock.v1.UploadHandoffRequest", part: { case: "chunk", value: new Uint8Array(chunk as Buffer) } };
  }
}

/** Client streaming needs HTTP/2: a transport of its own, to the same address. */
function streamingClient(address: string, token: string | undefined) {
  const interceptors: Interceptor[] = token ? [bearer(token)] : [];
  const transport = address.startsWith("unix:")
    ? createConnectTransport({ baseUrl: "http://localhost", httpVersion: "2", interceptors, nodeOptions: { createConnection: () => netConnect(address.slice(5)) } })
    : createConnectTransport({ baseUrl: address, httpVersion: "2", interceptors });
  return createClient(TaskRunService, transport);
}
