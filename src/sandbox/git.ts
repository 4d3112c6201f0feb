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
          return reject(new SandboxError(`git ${args[0]} failed: ${detail}`, false, { cause: error }));
        }
        resolve(String(stdout).trim());
      },
    );
  });
}
