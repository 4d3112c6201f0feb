import type { HandoffFileInfo } from "./runner-protocol.js";

/** Claude Code's directory for a cwd's sessions: every character but [a-zA-Z0-9] becomes "-". */
export function claudeProjectKey(cwd: string): string {
  return cwd.replace(/[^a-zA-Z0-9]/g, "-");
}

/**
 * An agent's session file moved from one working directory to another: Claude Code's
 * project directory is renamed for the new cwd, and in every JSON line a "cwd" field (at
 * any depth) naming the old directory, or a path under it, names the new one. Lines that
 * are not JSON are kept as they are.
 */
export function rewriteSessionFile(f: HandoffFileInfo, content: Buffer, from: string, to: string): { path: string; content: Buffer } {
  let path = f.path;
  if (f.format === "claude") {
    const parts = path.split("/");
    if (parts.length >= 4 && parts[2] === claudeProjectKey(from)) parts[2] = claudeProjectKey(to);
    path = parts.join("/");
  }
  if (from === to) return { path, content };
  const move = (v: string) => (v === from ? to : v.startsWith(from + "/") ? to + v.slice(from.length) : v);
  const fix = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(fix);
    if (v && typeof v === "object") {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) out[k] = k === "cwd" && typeof x === "string" ? move(x) : fix(x);
      return out;
    }
    return v;
  };
  const lines = content.toString("utf8").split("\n").map((line) => {
    if (!line.trim()) return line;
    try {
      return JSON.stringify(fix(JSON.parse(line)));
    } catch {
      return line;
    }
  });
  return { path, content: Buffer.from(lines.join("\n"), "utf8") };
}
