import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { lstat, mkdir, open, realpath } from "node:fs/promises";
import { dirname, isAbsolute, sep } from "node:path";
import type { AgentUser } from "./agent-user.js";

/** Larger files are refused: the answer travels as one JSON-RPC message. */
export const MAX_FILE_BYTES = 16 * 1024 * 1024;
/** A read or write that takes longer (a FIFO planted in the workspace) is given up. */
const IO_TIMEOUT_MS = 30_000;

export class WorkspaceFileError extends Error {
  override name = "WorkspaceFileError";
}

/**
 * The ACP agent's fs/read_text_file and fs/write_text_file, confined to the workspace:
 * absolute paths only, no "..", and what the path resolves to (symlinks followed) must lie
 * in the workspace. The runner may be root, so with an agent user of its own the I/O
 * itself runs as that user: a symlink swapped in after the check reaches nothing the agent
 * could not reach anyway, and written files belong to the agent. Without one the runner
 * and the agent are the same user, and the files are opened without following a last
 * symlink. Error messages name only the agent's own path.
 */
export class WorkspaceFiles {
  private root: string | null = null;

  constructor(
    private readonly workspace: string,
    private readonly user: AgentUser,
  ) {}

  async read(path: string, line?: number | null, limit?: number | null): Promise<string> {
    this.checkShape(path);
    const real = await realpath(path).catch((error: NodeJS.ErrnoException) => {
      throw new WorkspaceFileError(error.code === "ENOENT" ? `${path}: no such file` : `${path}: cannot be read`);
    });
    await this.checkInside(real, path);
    const text = this.user ? await this.asUser(["cat", "--", real], null, path) : await readOwn(real, path);
    if (!line && !limit) return text;
    const lines = text.split("\n");
    const start = Math.max(0, (line ?? 1) - 1);
    return lines.slice(start, limit ? start + limit : undefined).join("\n");
  }

  async write(path: string, content: string): Promise<void> {
    this.checkShape(path);
    if (Buffer.byteLength(content) > MAX_FILE_BYTES) throw new WorkspaceFileError(`${path}: larger than ${MAX_FILE_BYTES} bytes`);
    const parent = dirname(path);
    // The nearest existing ancestor decides: directories made below it stay in the workspace.
    let existing = parent;
    for (;;) {
      const real = await realpath(existing).catch(() => null);
      if (real !== null) {
        await this.checkInside(real, path);
        break;
      }
      if (dirname(existing) === existing) throw new WorkspaceFileError(`${path} is outside the workspace`);
      existing = dirname(existing);
    }
    const stat = await lstat(path).catch(() => null);
    if (stat?.isSymbolicLink()) throw new WorkspaceFileError(`${path} is a symbolic link; it is not written through`);
    if (stat && !stat.isFile()) throw new WorkspaceFileError(`${path} is not a regular file`);
    if (this.user) {
      await this.asUser(["/bin/sh", "-c", 'mkdir -p -- "$1" && exec cat > "$2"', "sh", parent, path], content, path);
      return;
    }
    await mkdir(parent, { recursive: true });
    const handle = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o644).catch(() => {
      throw new WorkspaceFileError(`${path}: cannot be written`);
    });
    try {
      await handle.writeFile(content, "utf8");
    } finally {
      await handle.close();
    }
  }

  private checkShape(path: string): void {
    if (!isAbsolute(path)) throw new WorkspaceFileError(`${path}: the path must be absolute`);
    if (path.split(sep).includes("..")) throw new WorkspaceFileError(`${path}: ".." is not allowed`);
  }

  private async checkInside(real: string, path: string): Promise<void> {
    this.root ??= await realpath(this.workspace);
    if (real !== this.root && !real.startsWith(this.root + sep)) throw new WorkspaceFileError(`${path} is outside the workspace`);
  }

  /** Runs a small command as the agent's user: stdout is the result, input goes to stdin. */
  private asUser(argv: string[], input: string | null, path: string): Promise<string> {
    const [file, ...args] = argv;
    const child = spawn(file!, args, {
      uid: this.user!.uid,
      gid: this.user!.gid,
      cwd: this.workspace,
      env: { PATH: "/usr/local/bin:/usr/bin:/bin", LC_ALL: "C" },
      stdio: ["pipe", "pipe", "pipe"],
      timeout: IO_TIMEOUT_MS,
      killSignal: "SIGKILL",
    });
    return new Promise((resolve, reject) => {
      const out: Buffer[] = [];
      let size = 0;
      child.stdout.on("data", (c: Buffer) => {
        size += c.length;
        if (size > MAX_FILE_BYTES) child.kill("SIGKILL");
        else out.push(c);
      });
      child.stderr.resume();
      child.stdin.on("error", () => {});
      child.stdin.end(input ?? undefined);
      child.once("error", () => reject(new WorkspaceFileError(`${path}: the file could not be accessed`)));
      child.once("close", (code) => {
        if (size > MAX_FILE_BYTES) reject(new WorkspaceFileError(`${path}: larger than ${MAX_FILE_BYTES} bytes`));
        else if (code !== 0) reject(new WorkspaceFileError(`${path}: ${input === null ? "cannot be read" : "cannot be written"}`));
        else resolve(Buffer.concat(out).toString("utf8"));
      });
    });
  }
}

async function readOwn(real: string, path: string): Promise<string> {
  const handle = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => {
    throw new WorkspaceFileError(`${path}: cannot be read`);
  });
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new WorkspaceFileError(`${path} is not a regular file`);
    if (stat.size > MAX_FILE_BYTES) throw new WorkspaceFileError(`${path}: larger than ${MAX_FILE_BYTES} bytes`);
    return await handle.readFile("utf8");
  } finally {
    await handle.close();
  }
}
