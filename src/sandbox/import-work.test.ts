import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { EXPORT_REF } from "../agent/export-work.js";
import { importWork } from "./import-work.js";

const env = { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@example.test", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@example.test" };
const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), "paddock-import-"));
  dirs.push(d);
  return d;
};
const git = (cwd: string, args: string[], input?: string | Buffer) => execFileSync("git", args, { cwd, env, input, encoding: "utf8" }).trim();
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

/** The user's repository with one commit, and a sandbox's clone of it. */
function repoAndSandbox() {
  const source = tmp();
  git(source, ["init", "--quiet", "-b", "main"]);
  git(source, ["commit", "--quiet", "--allow-empty", "-m", "base"]);
  const sandbox = tmp();
  git(sandbox, ["clone", "--quiet", source, "."]);
  return { source, sandbox, base: git(source, ["rev-parse", "HEAD"]) };
}

/** A bundle of `head` under the export ref, as the runner makes it, from `dir`. */
function bundleOf(dir: string, head: string): string {
  git(dir, ["update-ref", EXPORT_REF, head]);
  const bundle = join(dir, "work.bundle");
  git(dir, ["bundle", "create", "--quiet", bundle, EXPORT_REF, "^origin/main"]);
  return bundle;
}

describe("importWork", () => {
  it("takes a sandbox's commit onto the run's branch only, and moves it only forward", async () => {
    const { source, sandbox } = repoAndSandbox();
    git(sandbox, ["commit", "--quiet", "--allow-empty", "-m", "work"]);
    const head = git(sandbox, ["rev-parse", "HEAD"]);
    const refsBefore = git(source, ["for-each-ref"]);
    const result = await importWork({ source, resultBranch: "paddock/run_a", bundle: bundleOf(sandbox, head), head, agentBranch: "paddock/run_a", signal: AbortSignal.timeout(30_000) });
    expect(result.resultCommit).toBe(head);
    expect(git(source, ["for-each-ref", "--format=%(refname)"]).split("\n")).toEqual(["refs/heads/main", "refs/heads/paddock/run_a"]);
    expect(refsBefore).toContain("refs/heads/main");
    // A rewritten history does not replace the branch.
    git(sandbox, ["commit", "--quiet", "--amend", "--allow-empty", "-m", "rewritten"]);
    const other = git(sandbox, ["rev-parse", "HEAD"]);
    await expect(importWork({ source, resultBranch: "paddock/run_a", bundle: bundleOf(sandbox, other), head: other, agentBranch: "paddock/run_a", signal: AbortSignal.timeout(30_000) })).rejects.toThrow(/does not fast-forward paddock\/run_a/);
    expect(git(source, ["rev-parse", "paddock/run_a"])).toBe(head);
  });

  it("refuses a bundle whose tree reaches out of the repository ('..'), which git's fetch would take unchecked", async () => {
    const { source, sandbox, base } = repoAndSandbox();
    const blob = git(sandbox, ["hash-object", "-w", "--stdin"], "owned\n");
    const inner = git(sandbox, ["mktree"], `100644 blob ${blob}\tescape\n`);
    const evil = git(sandbox, ["hash-object", "-t", "tree", "--literally", "-w", "--stdin"], Buffer.concat([Buffer.from("40000 ..\0"), Buffer.from(inner, "hex")]));
    const head = git(sandbox, ["commit-tree", evil, "-p", base, "-m", "escape"]);
    const bundle = bundleOf(sandbox, head);
    await expect(importWork({ source, resultBranch: "paddock/run_b", bundle, head, agentBranch: "paddock/run_b", signal: AbortSignal.timeout(30_000) })).rejects.toThrow(
      /git's object checks refused the bundle: .*hasDotdot/,
    );
    expect(git(source, ["for-each-ref", "--format=%(refname)"])).toBe("refs/heads/main");
  });

  it("refuses a bundle that holds another commit than the one the sandbox named", async () => {
    const { source, sandbox, base } = repoAndSandbox();
    git(sandbox, ["commit", "--quiet", "--allow-empty", "-m", "work"]);
    const head = git(sandbox, ["rev-parse", "HEAD"]);
    await expect(importWork({ source, resultBranch: "paddock/run_c", bundle: bundleOf(sandbox, head), head: base, agentBranch: "paddock/run_c", signal: AbortSignal.timeout(30_000) })).rejects.toThrow(/its bundle holds/);
  });
});
