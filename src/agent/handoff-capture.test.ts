import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { makeGitRepo, sh, tempDir } from "../../test/fixtures.js";
import { captureHandoff } from "./handoff-capture.js";
import { HANDOFF_WORK_REF } from "./runner-protocol.js";

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

describe("a handoff capture", () => {
  it("still names its state when that state is the very commit of the capture the run started from", async () => {
    // A run pushed from a handoff state, captured again unchanged within the same second,
    // makes the same commits as that state, which is one of its bases: the bundle must
    // carry the ref anyway (git leaves out a ref whose commit it is told to exclude).
    const workdir = makeGitRepo();
    const state = tempDir("capture");
    dirs.push(workdir, state);
    const head = sh(workdir, "git", "rev-parse", "HEAD");
    const capture = (bases: string[], file: string) => captureHandoff({ workdir, user: null, home: state, bundleFile: join(state, file), bases, sessionId: "" });
    for (let attempt = 0; attempt < 20; attempt++) {
      const first = await capture([head], "first.bundle");
      const again = await capture([head, first.worktree], "again.bundle");
      if (again.worktree !== first.worktree) continue; // a second apart: not the case under test
      expect(sh(workdir, "git", "bundle", "list-heads", join(state, "again.bundle"))).toBe(`${again.worktree} ${HANDOFF_WORK_REF}`);
      return;
    }
    throw new Error("no two captures within one second in 20 attempts");
  });
});
