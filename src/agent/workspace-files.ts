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
 * Run as the agent's user ($1 the workspace's real path, $2 the path asked for): each exits
 * with a code saying why it refused, which `REFUSALS` turns into a message.
 */
const READ_SCRIPT = `r=$(realpath -e -- "$2" 2>/dev/null) || exit 3
case "$r/" in "$1"/*) ;; *) exit 4 ;; esac
[ -f "$r" ] || exit 6
exec cat -- "$r"`;
const WRITE_SCRIPT = `p=$(realpath -m -- "$(dirname -- "$2")" 2>/dev/null) || exit 4
case "$p/" in "$1"/*) ;; *) exit 4 ;; esac
f="$p/$(basename -- "$2")"
[ -L "$f" ] && exit 5
[ -e "$f" ] && [ ! -f "$f" ] && exit 6
mkdir -p -- "$p" || exit 7
exec cat > "$f"`;
const REFUSALS: Record<number, string> = {
  3: "no such file",
  4: "outside the workspace",
  5: "a symbolic link; it is not written through",
  6: "not a regular file",
};

/**
 * The ACP agent's fs/read_text_file and fs/write_text_file, confined to the workspace:
 * absolute paths only, no "..", and what the path resolves to (symlinks followed) must lie
 * in the workspace; a write never goes through a symlink. The runner may be root, so with
 * an agent user of its own the check and the I/O run as that user: nothing an agent plants
 * (a symlink swapped in after a check, a probe of root's files) reaches further than the
 * agent itself could, and written files belong to the agent. Without one, the runner and
 * the agent are the same user and the runner does both itself. Error messages name only
 * the agent's own path.
 */
export class WorkspaceFiles {
  private root: string | null = null;

  constructor(
    private readonly workspace: string,
    private readonly user: AgentUser,
  ) {}

  async read(path: string, line?: number | null, limit?: number | null): Promise<string> {
    this.checkShape(path);
    const root = await this.realRoot();
    let text: string;
    if (this.user) {
      text = await this.asUser(READ_SCRIPT, root, path, null, "cannot be read");
    } else {
      const real = await realpath(path).catch(() => {
        throw new WorkspaceFileError(`${path}: ${REFUSALS[3]}`);
      });
      this.checkInside(root, real, path);
      text = await readOwn(real, path);
    }
    if (!line && !limit) return text;
    const lines = text.split("\n");
    const start = Math.max(0, (line ?? 1) - 1);
    return lines.slice(start, limit ? start + limit : undefined).join("\n");
  }

  async write(path: string, content: string): Promise<void> {
    this.checkShape(path);
    if (Buffer.byteLength(content) > MAX_FILE_BYTES) throw new WorkspaceFileError(`${path}: larger than ${MAX_FILE_BYTES} bytes`);
    const root = await this.realRoot();
    if (this.user) {
      await this.asUser(WRITE_SCRIPT, root, path, content, "cannot be written");
      return;
    }
    // The nearest existing ancestor decides: directories made below it stay in the workspace.
    const parent = dirname(path);
    let existing = parent;
    for (;;) {
      const real = await realpath(existing).catch(() => null);
      if (real !== null) {
        this.checkInside(root, real, path);
        break;
      }
      if (dirname(existing) === existing) throw new WorkspaceFileError(`${path}: ${REFUSALS[4]}`);
      existing = dirname(existing);
    }
    const stat = await lstat(path).catch(() => null);
    if (stat?.isSymbolicLink()) throw new WorkspaceFileError(`${path}: ${REFUSALS[5]}`);
    if (stat && !stat.isFile()) throw new WorkspaceFileError(`${path}: ${REFUSALS[6]}`);
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

  /** The workspace's real path: made by the runner, in a directory the agent cannot change. */
  private async realRoot(): Promise<string> {
    this.root ??= await realpath(this.workspace);
    return this.root;
  }

  private checkInside(root: string, real: string, path: string): void {
    if (real !== root && !real.startsWith(root + sep)) throw new WorkspaceFileError(`${path}: ${REFUSALS[4]}`);
  }

  /** Runs one of the scripts as the agent's user: its stdout is the result, `input` its stdin. */
  private asUser(script: string, root: string, path: string, input: string | null, failure: string): Promise<string> {
    const child = spawn("/bin/sh", ["-c", script, "sh", root, path], {
      uid: this.user!.uid,
      gid: this.user!.gid,
      cwd: root,
      env: { PATH: "/usr/local/bin:/usr/bin:/bin", LC_ALL: "C" },
      stdio: ["pipe", "pipe", "ignore"],
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
      child.stdin.on("error", () => {});
      child.stdin.end(input ?? undefined);
      child.once("error", () => reject(new WorkspaceFileError(`${path}: ${failure}`)));
      child.once("close", (code) => {
        if (size > MAX_FILE_BYTES) reject(new WorkspaceFileError(`${path}: larger than ${MAX_FILE_BYTES} bytes`));
        else if (code !== 0) reject(new WorkspaceFileError(`${path}: ${REFUSALS[code ?? -1] ?? failure}`));
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
