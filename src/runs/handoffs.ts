import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, existsSync, readFileSync } from "node:fs";
import { mkdir, rename, rm, stat, writeFile } from "node:fs/promises";
import type { IncomingMessage } from "node:http";
import { join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { safeRelativePath } from "../agent/handoff-capture.js";
import type { HandoffFileInfo, HandoffState } from "../agent/runner-protocol.js";
import { InvalidArgumentError, NotFoundError, SandboxError } from "../errors.js";
import type { RunnerClient } from "../sandbox/runner-client.js";

/** What a handoff carries besides its bundle (the API's HandoffManifest, in domain terms). */
export interface HandoffManifestData {
  runId: string;
  taskId: string;
  branch: string;
  head: string;
  index: string;
  worktree: string;
  conversation: string;
  agentKind: string;
  agentCommand: string[];
  sessionId: string;
  sourceCwd: string;
  lastEventSeq: number;
  files: HandoffFileInfo[];
  bundleBytes: number;
}

/** What a kept state says of its run. */
type HandoffRun = { id: string; taskId: string; agentKind: string; agentCommand: string[] };

export interface StoredHandoff {
  manifest: HandoffManifestData;
  /** Path of the bundle file. */
  bundle: string;
}

/** A kept bundle in pieces of at most `size` bytes, read as they are sent. */
export function bundleChunks(h: StoredHandoff, size = 256 * 1024): AsyncIterable<Buffer> {
  return createReadStream(h.bundle, { highWaterMark: size });
}

/** Raised when a handoff is over the size limit; the message names both sizes. */
export class HandoffTooLargeError extends InvalidArgumentError {}

const SHA = /^[0-9a-f]{40}([0-9a-f]{24})?$/;
const SESSION_ID = /^[A-Za-z0-9._-]{0,200}$/;

/**
 * Checks a manifest from a sandbox or a client before anything acts on it: commit names,
 * session file paths confined to the agent's home, printable bounded strings. Throws an
 * InvalidArgumentError naming the field.
 */
export function checkManifest(m: HandoffManifestData, field = "manifest"): HandoffManifestData {
  const bad = (f: string, why: string): never => {
    throw new InvalidArgumentError(`${field}.${f}`, why);
  };
  for (const [f, v] of [["head_commit", m.head], ["index_commit", m.index], ["worktree_commit", m.worktree]] as const) if (!SHA.test(v)) bad(f, "is not a commit id");
  if (m.conversation && !SHA.test(m.conversation)) bad("conversation_commit", "is not a commit id");
  if (!SESSION_ID.test(m.sessionId)) bad("acp_session_id", "is not a session id");
  if (m.files.length > 16) bad("session_files", "has more than 16 files");
  if (m.files.length > 0 && !m.conversation) bad("session_files", "needs a conversation_commit");
  m.files.forEach((f, i) => {
    if (!safeRelativePath(f.path)) bad(`session_files[${i}].path`, `${JSON.stringify(f.path.slice(0, 200))} is not a plain path inside the agent's home`);
    if (!["claude", "codex", "other"].includes(f.format)) bad(`session_files[${i}].format`, "is not claude, codex or other");
  });
  if (m.sourceCwd && (!m.sourceCwd.startsWith("/") || m.sourceCwd.length > 4096 || /[\x00-\x1f\x7f]/.test(m.sourceCwd))) bad("source_cwd", "is not an absolute path");
  if (m.branch.length > 255 || /[\x00-\x20\x7f~^:?*[\\]/.test(m.branch)) bad("branch", "is not a branch name");
  if (m.agentCommand.length > 100 || m.agentCommand.some((a) => a.length > 4096)) bad("agent_command", "is too long");
  return m;
}

/**
 * Where handoffs live on the daemon: per run, the state taken at its cleanup (or when it
 * was handed off), and uploads waiting for their run. Bundles are files, streamed in and
 * out, never held in memory, and never larger than maxBytes.
 */
export class Handoffs {
  constructor(
    private readonly dir: string,
    private readonly maxBytes: number,
  ) {}

  private runDir(runId: string) {
    return join(this.dir, "runs", runId);
  }

  private uploadDir(id: string) {
    return join(this.dir, "uploads", id);
  }

  /** The run's kept handoff, or null. */
  stored(runId: string): StoredHandoff | null {
    const dir = this.runDir(runId);
    if (!existsSync(join(dir, "manifest.json"))) return null;
    return { manifest: JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as HandoffManifestData, bundle: join(dir, "bundle") };
  }

  /** The most bytes a handoff bundle may hold (--handoff-max-bytes). */
  get limitBytes(): number {
    return this.maxBytes;
  }

  /** A fresh file in the run's dir for a bundle being received (then keep() or failed()). */
  async bundleFile(runId: string): Promise<string> {
    const dir = this.runDir(runId);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return join(dir, `bundle.tmp-${randomBytes(4).toString("hex")}`);
  }

  /**
   * Takes the run's state from its runner (which stops the agent first) and keeps it. A
   * bundle past the limit is cut off and refused, naming the limit.
   */
  async takeFromRunner(run: HandoffRun, runner: RunnerClient, signal: AbortSignal): Promise<StoredHandoff> {
    const tmp = await this.bundleFile(run.id);
    let state: HandoffState;
    try {
      state = await runner.handoff((body: IncomingMessage) => pipeline(body, this.limit("the run's handoff bundle"), createWriteStream(tmp, { mode: 0o600 })), signal);
    } catch (error) {
      throw await this.failed(run.id, error, tmp);
    }
    return this.keep(run, state, tmp);
  }

  /** Keeps the state a runner sent, whose bundle is in `tmp` (from bundleFile); checks its manifest first. */
  async keep(run: HandoffRun, state: HandoffState, tmp: string): Promise<StoredHandoff> {
    const dir = this.runDir(run.id);
    try {
      const size = (await stat(tmp)).size;
      const manifest = checkManifest(
        {
          runId: run.id,
          taskId: run.taskId,
          branch: `paddock/${run.id}`,
          head: String(state.head),
          index: String(state.index),
          worktree: String(state.worktree),
          conversation: String(state.conversation ?? ""),
          agentKind: run.agentKind,
          agentCommand: run.agentCommand,
          sessionId: String(state.sessionId ?? ""),
          sourceCwd: String(state.sourceCwd ?? ""),
          lastEventSeq: Number(state.lastSeq) || 0,
          files: Array.isArray(state.files) ? state.files.map((f) => ({ path: String(f.path), format: f.format })) : [],
          bundleBytes: size,
        },
        "the sandbox's handoff",
      );
      await rename(tmp, join(dir, "bundle"));
      await writeFile(join(dir, "manifest.json"), JSON.stringify(manifest), { mode: 0o600 });
      return { manifest, bundle: join(dir, "bundle") };
    } catch (error) {
      throw await this.failed(run.id, error, tmp);
    }
  }

  /** Records why the run's state was not kept (the sandbox's fault, said without a request field); returns that error. */
  async failed(runId: string, error: unknown, tmp?: string): Promise<Error> {
    if (tmp) await rm(tmp, { force: true });
    const failure = error instanceof InvalidArgumentError ? new SandboxError(error.message.replace(/^bundle: /, ""), false) : (error as Error);
    await mkdir(this.runDir(runId), { recursive: true, mode: 0o700 }).catch(() => undefined);
    await writeFile(join(this.runDir(runId), "failed"), failure.message, { mode: 0o600 }).catch(() => undefined);
    return failure;
  }

  /** Why the run's state could not be kept, if that was tried and failed. */
  failure(runId: string): string | null {
    const file = join(this.runDir(runId), "failed");
    return existsSync(file) ? readFileSync(file, "utf8") : null;
  }

  /** Keeps an uploaded state for the team; returns its id. */
  async saveUpload(team: string, manifest: HandoffManifestData, chunks: AsyncIterable<Uint8Array>): Promise<{ uploadId: string; size: number }> {
    checkManifest(manifest);
    const uploadId = `hnd_${Date.now().toString(36)}${randomBytes(10).toString("hex")}`;
    const dir = this.uploadDir(uploadId);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    try {
      await pipeline(chunks, this.limit("the uploaded handoff bundle"), createWriteStream(join(dir, "bundle"), { mode: 0o600 }));
      const size = (await stat(join(dir, "bundle"))).size;
      if (size === 0) throw new InvalidArgumentError("chunk", "no bundle bytes were sent");
      await writeFile(join(dir, "manifest.json"), JSON.stringify({ ...manifest, bundleBytes: size }), { mode: 0o600 });
      await writeFile(join(dir, "team"), team, { mode: 0o600 });
      return { uploadId, size };
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  /** The team's upload; another team's does not exist for it. */
  upload(uploadId: string, team: string): StoredHandoff {
    const dir = /^hnd_[a-z0-9]+$/.test(uploadId) ? this.uploadDir(uploadId) : "";
    if (!dir || !existsSync(join(dir, "team")) || readFileSync(join(dir, "team"), "utf8") !== team) throw new NotFoundError("handoff upload", uploadId);
    return { manifest: JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as HandoffManifestData, bundle: join(dir, "bundle") };
  }

  /** An upload whose run is over: its state is in the run's sandbox's results (and its kept handoff) now. */
  async removeUpload(uploadId: string): Promise<void> {
    if (/^hnd_[a-z0-9]+$/.test(uploadId)) await rm(this.uploadDir(uploadId), { recursive: true, force: true });
  }

  /** Passes bytes through until maxBytes; past it, fails naming the limit. */
  private limit(what: string): Transform {
    let seen = 0;
    const max = this.maxBytes;
    return new Transform({
      transform(chunk: Buffer, _enc, done) {
        seen += chunk.length;
        if (seen > max) return done(new HandoffTooLargeError("bundle", `${what} is over the daemon's limit of ${max} bytes (--handoff-max-bytes)`));
        done(null, chunk);
      },
    });
  }
}
