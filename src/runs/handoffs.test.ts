import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { InvalidArgumentError, NotFoundError } from "../errors.js";
import { checkManifest, Handoffs, type HandoffManifestData } from "./handoffs.js";

const sha = (c: string) => c.repeat(40);
const good: HandoffManifestData = {
  runId: "run_x",
  taskId: "task_x",
  branch: "paddock/run_x",
  head: sha("a"),
  index: sha("b"),
  worktree: sha("c"),
  conversation: sha("d"),
  agentKind: "acp",
  agentCommand: ["claude-code-acp"],
  sessionId: "0b6c-4e1f",
  sourceCwd: "/workspace",
  lastEventSeq: 12,
  files: [{ path: ".claude/projects/-workspace/0b6c-4e1f.jsonl", format: "claude" }],
  bundleBytes: 1,
};

describe("handoff manifests", () => {
  it("takes a well-formed one and names the field of a bad one", () => {
    expect(checkManifest({ ...good })).toEqual(good);
    const bad: [Partial<HandoffManifestData>, string][] = [
      [{ head: "HEAD" }, "manifest.head_commit: is not a commit id"],
      [{ conversation: "x" }, "manifest.conversation_commit: is not a commit id"],
      [{ sessionId: "../../x" }, "manifest.acp_session_id: is not a session id"],
      [{ files: [{ path: "../.bashrc", format: "claude" }] }, 'manifest.session_files[0].path: "../.bashrc" is not a plain path inside the agent\'s home'],
      [{ files: [{ path: "a.jsonl", format: "exe" as "other" }] }, "manifest.session_files[0].format: is not claude, codex or other"],
      [{ conversation: "" }, "manifest.session_files: needs a conversation_commit"],
      [{ sourceCwd: "relative" }, "manifest.source_cwd: is not an absolute path"],
      [{ branch: "a b" }, "manifest.branch: is not a branch name"],
    ];
    for (const [change, message] of bad) expect(() => checkManifest({ ...good, ...change })).toThrow(new InvalidArgumentError(message.split(": ")[0]!, message.split(": ").slice(1).join(": ")));
  });

  it("keeps uploads per team, bounded by the limit", async () => {
    const dir = mkdtempSync(join(tmpdir(), "paddock-handoffs-"));
    try {
      const store = new Handoffs(dir, 1024);
      const chunks = async function* (n: number) {
        for (let i = 0; i < n; i++) yield new Uint8Array(256);
      };
      const { uploadId, size } = await store.saveUpload("team-a", good, chunks(2));
      expect(size).toBe(512);
      expect(store.upload(uploadId, "team-a").manifest.bundleBytes).toBe(512);
      expect(() => store.upload(uploadId, "team-b")).toThrow(NotFoundError);
      await expect(store.saveUpload("team-a", good, chunks(5))).rejects.toThrow("bundle: the uploaded handoff bundle is over the daemon's limit of 1024 bytes (--handoff-max-bytes)");
      await store.removeUpload(uploadId);
      expect(() => store.upload(uploadId, "team-a")).toThrow(NotFoundError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
