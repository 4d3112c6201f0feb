import { spawn } from "node:child_process";
import { asUser, type AgentUser } from "./agent-user.js";

/**
 * Config that turns off what a repository's own files could make git execute or contact:
 * hooks, fsmonitor, ssh commands, and any system or global config. A repository the agent
 * touched may still carry filters and includes in .git/config, which is why git in such a
 * tree also runs as the agent's user: at worst the agent runs code as itself.
 */
export const HARDENED_GIT_CONFIG = [
  "-c", "core.hooksPath=/dev/null",
  "-c", "core.fsmonitor=false",
  "-c", "core.sshCommand=false",
  "-c", "safe.directory=*",
  "-c", "protocol.ext.allow=never",
];

export function hardenedGitEnv(home: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
    HOME: home,
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_GLOBAL: "/dev/null",
    GIT_TERMINAL_PROMPT: "0",
    GIT_ASKPASS: "/bin/false",
    LC_ALL: "C",
  };
}

/**
 * A clone of the source into `dest` as the sandbox takes it: objects copied, not hardlinked
 * (handing the files to the agent's user then touches nothing of the source's), without a
 * work tree when another user checks out. The runner's clone and the local provider's
 * (made while the runner starts) are this one.
 */
export function cloneArgs(source: string, dest: string, opts: { noCheckout: boolean }): string[] {
  return ["clone", "--quiet", "--no-hardlinks", ...(opts.noCheckout ? ["--no-checkout"] : []), source, dest];
}

export interface SandboxGitOptions {
  cwd: string;
  user: AgentUser;
  home: string;
  /** Where stdout goes: captured (default) or a file descriptor. */
  stdoutFd?: number;
  /** Added to the hardened environment (GIT_INDEX_FILE…). */
  env?: Record<string, string>;
  /** Written to git's stdin (update-ref --stdin); none by default. */
  input?: string;
  /** Kills git (SIGKILL) when aborted; the promise then rejects. */
  signal?: AbortSignal;
}

/** Runs hardened git in the sandbox; resolves trimmed stdout, rejects with git's own message. */
export function sandboxGit(args: string[], o: SandboxGitOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("git", [...HARDENED_GIT_CONFIG, ...args], {
      cwd: o.cwd,
      env: { ...hardenedGitEnv(o.home), ...o.env },
      stdio: [o.input === undefined ? "ignore" : "pipe", o.stdoutFd ?? "pipe", "pipe"],
      ...asUser(o.user),
      ...(o.signal ? { signal: o.signal, killSignal: "SIGKILL" as const } : {}),
    });
    if (o.input !== undefined) {
      child.stdin!.on("error", () => undefined); // a git that failed early stops reading
      child.stdin!.end(o.input);
    }
    let out = "";
    let err = "";
    child.stdout?.setEncoding("utf8").on("data", (d: string) => (out.length < 1 << 20 ? (out += d) : undefined));
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (err.length < 1 << 16 ? (err += d) : undefined));
    child.once("error", reject);
    child.once("close", (code) => {
      if (code === 0) resolve(out.trim());
      else reject(new Error(`git ${args[0]} failed: ${err.trim().split("\n").slice(-3).join("; ") || `exit ${code}`}`));
    });
  });
}
