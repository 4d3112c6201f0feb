import { describe, expect, it } from "vitest";
import { safeRelativePath } from "./handoff-capture.js";
import { claudeProjectKey, rewriteSessionFile } from "./session-files.js";

describe("session files moved between directories", () => {
  it("renames Claude Code's project directory and every cwd field, at any depth, leaving other lines alone", () => {
    const from = "/workspace";
    const to = "/home/me/src/my repo";
    const lines = [
      JSON.stringify({ type: "user", cwd: "/workspace", message: { content: "hi /workspace" } }),
      JSON.stringify({ type: "tool", nested: { cwd: "/workspace/sub" }, other: "/workspace" }),
      "not json /workspace",
      "",
    ].join("\n");
    const out = rewriteSessionFile({ path: `.claude/projects/${claudeProjectKey(from)}/s1.jsonl`, format: "claude" }, Buffer.from(lines), from, to);
    expect(out.path).toBe(".claude/projects/-home-me-src-my-repo/s1.jsonl");
    const [a, b, c, d] = out.content.toString().split("\n");
    expect(JSON.parse(a!)).toEqual({ type: "user", cwd: to, message: { content: "hi /workspace" } });
    expect(JSON.parse(b!)).toEqual({ type: "tool", nested: { cwd: `${to}/sub` }, other: "/workspace" });
    expect(c).toBe("not json /workspace");
    expect(d).toBe("");
  });

  it("keeps a Codex rollout's path and a file of another project where they are", () => {
    expect(rewriteSessionFile({ path: ".codex/sessions/2026/11/23/rollout-x-s1.jsonl", format: "codex" }, Buffer.from(""), "/a", "/b").path).toBe(".codex/sessions/2026/11/23/rollout-x-s1.jsonl");
    expect(rewriteSessionFile({ path: ".claude/projects/-elsewhere/s1.jsonl", format: "claude" }, Buffer.from(""), "/a", "/b").path).toBe(".claude/projects/-elsewhere/s1.jsonl");
  });

  it("takes only plain relative paths", () => {
    for (const bad of ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", ".git/config", "a/.GIT/b", "a/.git./b", "a\nb", "a\\b"]) expect(safeRelativePath(bad), bad).toBe(false);
    for (const good of ["a", ".claude/projects/-w/s.jsonl", "with space.txt", "dir/.gitignore", "...x"]) expect(safeRelativePath(good), good).toBe(true);
  });
});
