import { execFile } from "node:child_process";
import { SandboxError } from "../errors.js";

/** Runs git and returns trimmed stdout; a failure becomes a SandboxError carrying git's own message. */
export function git(args: string[], opts: { cwd?: string; signal?: AbortSignal; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      "git",
      args,
      {
        cwd: opts.cwd,
        signal: opts.signal,
        env: { ...process.env, ...opts.env, GIT_TERMINAL_PROMPT: "0" },
        maxBuffer: 64 * 1024 * 1024,
      },
      (error, stdout, stderr) => {
        if (error) {
          if (opts.signal?.aborted) return reject(opts.signal.reason ?? error);
          const detail = String(stderr).trim().split("\n").slice(-3).join("; ") || error.message;
          // ENOENT: git itself is missing, which retrying cannot fix.
          // Named by its subcommand, past options such as "-c name=value".
          const sub = args.find((a, i) => !a.startsWith("-") && !["-c", "-C", "--git-dir", "--work-tree"].includes(args[i - 1] ?? "")) ?? args[0];
          return reject(new SandboxError(`git ${sub} failed: ${detail}`, false, { cause: error }));
        }
        resolve(String(stdout).trim());
      },
    );
  });
}
