import { chmodSync, existsSync, lstatSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { makeGitRepo, sh, tempDir } from "../../test/fixtures.js";
import { BASES_FILE, checkout, prepareWorkspace, sourceCommit, type CheckoutOptions } from "./checkout.js";

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Runs as root here: the agent's user is a uid of its own, as in the sandbox image. */
const USER = process.getuid?.() === 0 ? { uid: 4242, gid: 4242 } : null;

/** A source repository and a workspace made ready from it as a warm pool's member does, before any run. */
async function prepared() {
  const source = makeGitRepo();
  const dir = tempDir("prepared");
  dirs.push(source, dir);
  chmodSync(dir, 0o755); // the agent's user reaches its workspace, as in the sandbox image
  const workdir = join(dir, "workspace");
  const home = join(dir, "home");
  const lines: string[] = [];
  const p = await prepareWorkspace({ source, workdir, user: USER, home, log: (l) => lines.push(l) });
  expect(lines).toEqual([]);
  expect(p).not.toBeNull();
  const claim = async (over: Partial<CheckoutOptions> = {}) => {
    const log: string[] = [];
    await checkout({ runId: "run_c1", source, workdir, stateDir: join(dir, "state"), branch: "", resultBranch: "paddock/run_c1", user: USER, home, log: (l) => log.push(l), prepared: p, ...over });
    return log;
  };
  const git = (...args: string[]) => sh(workdir, "git", "-c", "safe.directory=*", ...args);
  return { source, workdir, dir, p: p!, claim, git };
}

describe("a workspace made ready before its claim", () => {
  it("holds the source's default branch, detached, the agent's, before any run", async () => {
    const w = await prepared();
    expect(w.p.head).toBe(sh(w.source, "git", "rev-parse", "main"));
    expect(w.git("status", "--porcelain")).toBe("");
    expect(() => w.git("symbolic-ref", "-q", "HEAD")).toThrow(); // detached: no branch of any run yet
    if (USER) expect(statSync(join(w.workdir, "README.md")).uid).toBe(USER.uid);
  });

  it("is claimed without git when the run starts where it stands: the result branch there, HEAD on it, the agent's", async () => {
    const w = await prepared();
    expect(await w.claim()).toEqual(["checked out the default branch on paddock/run_c1 (made ready before the claim)"]);
    expect(w.git("symbolic-ref", "HEAD")).toBe("refs/heads/paddock/run_c1");
    expect(w.git("rev-parse", "HEAD")).toBe(w.p.head);
    expect(w.git("status", "--porcelain")).toBe("");
    expect(readFileSync(join(w.dir, "state", BASES_FILE), "utf8").split("\n")).toContain(w.p.head);
    if (USER) {
      for (const f of [".git/HEAD", ".git/refs/heads/paddock", ".git/refs/heads/paddock/run_c1"]) expect(statSync(join(w.workdir, f)).uid).toBe(USER.uid);
    }
    // git takes what was written: a commit on the branch moves it.
    writeFileSync(join(w.workdir, "new.txt"), "x\n");
    w.git("add", "new.txt");
    w.git("-c", "user.name=a", "-c", "user.email=a@a", "commit", "-qm", "work");
    expect(w.git("rev-parse", "paddock/run_c1^")).toBe(w.p.head);
    // Done for this run: a restarted runner leaves it alone.
    expect(await w.claim()).toEqual(["workspace already checked out on paddock/run_c1"]);
  });

  it("fetches when the source's branch moved since, and starts from where it is now", async () => {
    const w = await prepared();
    writeFileSync(join(w.source, "README.md"), "moved\n");
    sh(w.source, "git", "commit", "-qam", "moved");
    const now = sh(w.source, "git", "rev-parse", "main");
    const log = (await w.claim()).join("\n");
    expect(log).toMatch(/fetching what changed/);
    if (USER) expect(log).not.toMatch(/hand-over/); // the agent's user checked out: nothing of root's to hand over in the tree
    expect(w.git("rev-parse", "HEAD")).toBe(now);
    if (USER) expect(statSync(join(w.workdir, "README.md")).uid).toBe(USER.uid);
    expect(w.git("status", "--porcelain")).toBe("");
    expect(w.git("symbolic-ref", "HEAD")).toBe("refs/heads/paddock/run_c1");
    expect(readFileSync(join(w.workdir, "README.md"), "utf8")).toBe("moved\n");
  });

  it("checks another branch out in full, and names a missing one", async () => {
    const w = await prepared();
    sh(w.source, "git", "checkout", "-q", "feature");
    writeFileSync(join(w.source, "f.txt"), "feature\n");
    sh(w.source, "git", "add", "f.txt");
    sh(w.source, "git", "commit", "-qm", "feature work");
    sh(w.source, "git", "checkout", "-q", "main");
    await w.claim({ branch: "feature" });
    expect(w.git("rev-parse", "HEAD")).toBe(sh(w.source, "git", "rev-parse", "feature"));
    expect(readFileSync(join(w.workdir, "f.txt"), "utf8")).toBe("feature\n");
    const other = await prepared();
    await expect(other.claim({ branch: "nope" })).rejects.toThrow(/branch "nope" not found/);
  });
});

describe("a fresh checkout", () => {
  it("clones, starts from the branch asked for, hands every file to the agent's user and records the source's commits", async () => {
    const source = makeGitRepo();
    const dir = tempDir("fresh");
    dirs.push(source, dir);
    chmodSync(dir, 0o755);
    sh(source, "git", "checkout", "-q", "feature");
    writeFileSync(join(source, "f.txt"), "feature\n");
    sh(source, "git", "add", "f.txt");
    sh(source, "git", "commit", "-qm", "feature work");
    sh(source, "git", "checkout", "-q", "main");
    const workdir = join(dir, "workspace");
    const log: string[] = [];
    await checkout({ runId: "run_f1", source, workdir, stateDir: join(dir, "state"), branch: "feature", resultBranch: "paddock/run_f1", user: USER, home: join(dir, "home"), log: (l) => log.push(l) });
    expect(log.join("\n")).toMatch(/checked out feature on paddock\/run_f1 \(clone \d+ ms, checkout \d+ ms\)/);
    // Before git runs here as root (a status rewrites the index as its own).
    if (USER) {
      const owners = new Set<number>();
      const walk = (d: string): void => {
        for (const e of readdirSync(d, { withFileTypes: true })) {
          owners.add(lstatSync(join(d, e.name)).uid);
          if (e.isDirectory()) walk(join(d, e.name));
        }
      };
      walk(workdir);
      expect([...owners]).toEqual([USER.uid]);
    }
    const git = (...args: string[]) => sh(workdir, "git", "-c", "safe.directory=*", ...args);
    expect(git("rev-parse", "HEAD")).toBe(sh(source, "git", "rev-parse", "feature"));
    expect(git("symbolic-ref", "HEAD")).toBe("refs/heads/paddock/run_f1");
    expect(git("status", "--porcelain")).toBe("");
    const bases = readFileSync(join(dir, "state", BASES_FILE), "utf8").split("\n");
    expect(bases.sort()).toEqual([sh(source, "git", "rev-parse", "main"), sh(source, "git", "rev-parse", "feature")].sort());
    await expect(
      checkout({ runId: "run_f2", source, workdir: join(dir, "w2"), stateDir: join(dir, "s2"), branch: "nope", resultBranch: "paddock/run_f2", user: USER, home: join(dir, "h2"), log: () => {} }),
    ).rejects.toThrow(/branch "nope" not found/);
  });

  it.runIf(USER)("hands over what root wrote in a snapshot's .git without following a link planted there", async () => {
    const w = await prepared();
    const outside = tempDir("outside");
    dirs.push(outside);
    writeFileSync(join(outside, "roots.txt"), "root's\n");
    symlinkSync(join(outside, "roots.txt"), join(w.workdir, ".git", "planted"));
    symlinkSync(outside, join(w.workdir, ".git", "planted-dir"));
    writeFileSync(join(w.source, "README.md"), "moved\n");
    sh(w.source, "git", "commit", "-qam", "moved");
    expect((await w.claim()).join("\n")).toMatch(/fetching what changed/);
    expect(statSync(join(outside, "roots.txt")).uid).toBe(0);
    expect(statSync(outside).uid).toBe(0);
    expect(lstatSync(join(w.workdir, ".git", "planted")).uid).toBe(USER!.uid);
    expect(statSync(join(w.workdir, ".git", "HEAD")).uid).toBe(USER!.uid);
  });
});

describe("a workspace whose refs lead out of it", () => {
  it("is never written through a planted link: the claim falls back to git, which checks out in the workspace", async () => {
    const w = await prepared();
    const elsewhere = tempDir("elsewhere");
    dirs.push(elsewhere);
    // The branches' directory replaced by a link to somewhere root could write.
    rmSync(join(w.workdir, ".git", "refs", "heads"), { recursive: true, force: true });
    symlinkSync(elsewhere, join(w.workdir, ".git", "refs", "heads"));
    expect((await w.claim()).join("\n")).toMatch(/fetching what changed/);
    expect(readdirSync(elsewhere).filter((f) => f !== "paddock")).toEqual([]);
    expect(existsSync(join(elsewhere, "paddock", "run_c1.lock"))).toBe(false);
    expect(w.git("rev-parse", "HEAD")).toBe(w.p.head);
  });
});

describe("sourceCommit", () => {
  it("reads a branch from loose refs and packed-refs, and gives up on what it does not know", async () => {
    const source = makeGitRepo();
    dirs.push(source);
    const main = sh(source, "git", "rev-parse", "main");
    expect(sourceCommit(source, "")).toBe(main);
    expect(sourceCommit(source, "feature")).toBe(main);
    sh(source, "git", "pack-refs", "--all");
    expect(sourceCommit(source, "feature")).toBe(main);
    expect(sourceCommit(source, "nope")).toBeUndefined();
    expect(sourceCommit(source, "../../HEAD")).toBeUndefined();
    sh(source, "git", "checkout", "-q", "--detach");
    expect(sourceCommit(source, "")).toBeUndefined(); // no branch to follow: the caller fetches
    const bare = tempDir("bare");
    dirs.push(bare);
    sh(bare, "git", "clone", "-q", "--bare", source, "b.git");
    expect(sourceCommit(join(bare, "b.git"), "feature")).toBe(main);
  });
});
