import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect } from "vitest";
import { EXIT, runClientCommand } from "../src/cli/commands.js";
import { applyHandoff } from "../src/cli/handoff.js";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { HandoffManifestSchema } from "../src/gen/paddock/v1/task_run_pb.js";
import { chmodSync, readdirSync } from "node:fs";
import { AgentKind, RunMode, RunStatus, type RunEvent } from "../src/gen/paddock/v1/task_run_pb.js";
import { allLogs, dockerAvailable, gitEnv, sh, startDaemon, cleanUp, tempDir, test, watchToEnd, type Daemon } from "./fixtures.js";

/**
 * Handoff through the whole daemon: a scripted ACP agent (test/fixtures) changes a real
 * repository in a local sandbox, `paddock handoff pull` brings the state into a clone,
 * `paddock handoff push` starts a new run from it, and the agent goes on with the same
 * conversation. Every check compares `git status --porcelain` bytes on both sides.
 */
const FIXTURE = resolve(import.meta.dirname, "fixtures", "scripted-acp-agent.mjs");
const LOADING_AGENT = ["env", "SCRIPTED_ACP_LOAD=1", "node", FIXTURE];
const PLAIN_AGENT = ["node", FIXTURE];

const b64 = (s: string) => Buffer.from(s).toString("base64");

/** Every kind of change: committed, staged, unstaged, both, deleted (both ways), renamed, binary, spaces, untracked, ignored. */
const CHANGES = `set -e
g() { git -c user.name=agent -c user.email=agent@example.test "$@"; }
echo committed > committed.txt && g add committed.txt && g commit -q -m "the agent's commit"
echo staged > a.txt && g add a.txt
echo unstaged >> b.txt
echo both1 > c.txt && g add c.txt && echo both2 >> c.txt
g rm -q d.txt
rm e.txt
g mv "old name.txt" "new name.txt"
printf '\\000\\001\\002binary' > new.bin && g add new.bin
printf '\\377\\376' >> bin.dat
echo untracked > "with space.txt"
mkdir -p dir && echo nested > dir/nested.txt
echo ignored > build.log
git status --porcelain
`;
const STATUS = "git status --porcelain";

/** A source repository with files for every kind of change, and an ignore rule. */
function makeRepo(): string {
  const dir = tempDir("handoff-repo");
  sh(dir, "git", "init", "--quiet", "-b", "main");
  for (const f of ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "old name.txt"]) writeFileSync(join(dir, f), `${f}\n`);
  writeFileSync(join(dir, "bin.dat"), Buffer.from([0, 1, 2, 3, 255]));
  writeFileSync(join(dir, ".gitignore"), "*.log\n");
  sh(dir, "git", "add", ".");
  sh(dir, "git", "commit", "--quiet", "-m", "initial");
  return dir;
}

/** A user's clone of the repository. */
function clone(repo: string): string {
  const dir = tempDir("handoff-local");
  rmSync(dir, { recursive: true });
  execFileSync("git", ["clone", "--quiet", repo, dir], { env: gitEnv });
  return dir;
}

async function cli(d: Daemon, cwd: string, ...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const end = argv.includes("--") ? argv.indexOf("--") : argv.length; // what follows "--" is the agent's
  const code = await runClientCommand([...argv.slice(0, end), "--address", d.url, ...argv.slice(end)], {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    env: { PADDOCK_TOKEN: d.adminToken },
    cwd,
    defaultSocket: "/nonexistent/paddock.sock",
    signal: new AbortController().signal,
  });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/** Follows the run's events until `until` holds for one; returns everything seen. */
async function followUntil(d: Daemon, runId: string, until: (e: RunEvent) => boolean): Promise<RunEvent[]> {
  const seen: RunEvent[] = [];
  const abort = new AbortController();
  try {
    for await (const res of d.runs.streamEvents({ runId, follow: true }, { signal: abort.signal, timeoutMs: 60_000 })) {
      seen.push(...res.events);
      if (res.events.some(until)) break;
    }
  } finally {
    abort.abort();
  }
  return seen;
}

/** What the agent said, joined. */
const said = (events: RunEvent[]) =>
  events
    .flatMap((e) => (e.kind.case === "agentUpdate" && e.kind.value.updateKind === "agent_message_chunk" && !e.kind.value.replayed ? [String((e.kind.value.update?.content as { text?: string } | undefined)?.text ?? "")] : []))
    .join("");

/** The bytes a "shell:" step printed, the n-th one. */
function shellOutput(events: RunEvent[], n = 0): string {
  const all = [...said(events).matchAll(/shell: ([A-Za-z0-9+/=]*)\n/g)];
  return Buffer.from(all[n]![1]!, "base64").toString("utf8");
}

const turnEnded = (e: RunEvent) => e.kind.case === "turnEnded";

async function acpRun(d: Daemon, repo: string, agent: string[], title: string, description = "") {
  const { task } = await d.tasks.createTask({ title, description, repository: repo });
  const { run } = await d.runs.startRun({ taskId: task!.id, agent: { kind: AgentKind.ACP, command: agent }, mode: RunMode.INTERACTIVE });
  return run!;
}

const status = (dir: string) => execFileSync("git", ["status", "--porcelain"], { cwd: dir, encoding: "utf8" });

describe("handoff", () => {
  test("pull and push: every kind of change comes out and goes back byte for byte, and the agent loads its own session", async ({ daemon }) => {
    const repo = makeRepo();
    const local = clone(repo);
    const again = clone(repo);
    try {
      const run = await acpRun(daemon, repo, LOADING_AGENT, "say:first_turn", `shell:${b64(CHANGES)}`);
      const first = await followUntil(daemon, run.id, turnEnded);
      const sandboxStatus = shellOutput(first);
      expect(sandboxStatus).toContain(`R  "old name.txt" -> "new name.txt"`);

      // A dirty destination is refused, naming the file.
      writeFileSync(join(local, "stray.txt"), "x\n");
      const dirty = await cli(daemon, local, "handoff", "pull", run.id);
      expect(dirty.code).toBe(EXIT.precondition);
      expect(dirty.err).toContain("stray.txt");
      rmSync(join(local, "stray.txt"));

      // Pull from the running run: it ends, handed off, and its exact state is here.
      const pulled = await cli(daemon, local, "handoff", "pull", run.id);
      expect(pulled.err).toBe("");
      expect(pulled.code).toBe(EXIT.ok);
      expect(status(local)).toBe(sandboxStatus);
      expect(sh(local, "git", "symbolic-ref", "--short", "HEAD")).toBe(`paddock/${run.id}`);
      expect(sh(local, "git", "log", "-1", "--format=%s")).toBe("the agent's commit");
      expect(existsSync(join(local, "build.log"))).toBe(false); // ignored files stay behind
      expect(readFileSync(join(local, "new.bin"))).toEqual(Buffer.from([0, 1, 2, ...Buffer.from("binary")]));
      const final = (await watchToEnd(daemon, run.id)).pop()!;
      expect(final).toMatchObject({ status: RunStatus.COMPLETED, handedOffTo: "local" });
      expect(final.handedOffTime).toBeDefined();

      // The conversation came too, its files moved to this checkout's directory.
      const manifest = JSON.parse(readFileSync(join(local, ".git", "paddock", "handoff", run.id, "manifest.json"), "utf8")) as { sessionId: string; files: { path: string }[]; lastEventSeq: number };
      expect(manifest.sessionId).toMatch(/^sess_/);
      expect(manifest.lastEventSeq).toBeGreaterThan(0);
      const key = local.replace(/[^a-zA-Z0-9]/g, "-");
      expect(manifest.files.map((f) => f.path)).toEqual([`.claude/projects/${key}/${manifest.sessionId}.jsonl`]);
      const session = readFileSync(join(local, ".git", "paddock", "handoff", run.id, "home", manifest.files[0]!.path), "utf8");
      expect(session).toContain(`"cwd":${JSON.stringify(local)}`);

      // Push it back: a new run from this state, the same conversation loaded by the agent.
      const before = status(local);
      const pushed = await cli(daemon, local, "handoff", "push", "--provider", "local", "--prompt", `recall shell:${b64(STATUS)}`, "--json");
      expect(pushed.err).toBe("");
      expect(pushed.code).toBe(EXIT.ok);
      expect(status(local)).toBe(before); // the checkout is left as it was
      const second = JSON.parse(pushed.out) as { id: string };
      const events = await followUntil(daemon, second.id, turnEnded);
      expect(shellOutput(events)).toBe(before);
      expect(said(events)).toMatch(/recall: say:first_turn\s+shell:/);
      expect(events.some((e) => e.kind.case === "agentUpdate" && e.kind.value.replayed)).toBe(true);
      const got = (await daemon.runs.getRun({ runId: second.id })).run!;
      expect(got).toMatchObject({ fromHandoff: true, handoffSourceRunId: run.id, handoffResume: "session_load", agentKind: AgentKind.ACP, mode: RunMode.INTERACTIVE });

      // And out again into another clone: the same bytes.
      // (This clone predates the first run's commit: it is told to fetch first.)
      const stale = await cli(daemon, again, "handoff", "pull", second.id);
      expect(stale.code).toBe(EXIT.precondition);
      expect(stale.err).toMatch(/lacks commits the run started from; fetch the repository first/);
      sh(again, "git", "fetch", "--quiet", "origin");
      const back = await cli(daemon, again, "handoff", "pull", second.id);
      expect(back.err).toBe("");
      expect(status(again)).toBe(before);
    } finally {
      for (const d of [repo, local, again]) rmSync(d, { recursive: true, force: true });
    }
  });

  test("a finished background run hands off from the state kept at cleanup; an agent that cannot load is given the transcript", async ({ daemon }) => {
    const repo = makeRepo();
    const local = clone(repo);
    try {
      const script = `set -e\necho more >> a.txt\ngit add a.txt\necho later >> b.txt\necho new > fresh.txt\ngit status --porcelain\n`;
      const { task } = await daemon.tasks.createTask({ title: "say:remember_the_word_zebra", description: `shell:${b64(script)}`, repository: repo });
      const { run } = await daemon.runs.startRun({ taskId: task!.id, agent: { kind: AgentKind.ACP, command: PLAIN_AGENT } });
      const done = (await watchToEnd(daemon, run!.id)).pop()!;
      expect(done.status).toBe(RunStatus.COMPLETED);
      const events: RunEvent[] = [];
      for await (const res of daemon.runs.streamEvents({ runId: run!.id })) events.push(...res.events);

      const pulled = await cli(daemon, local, "handoff", "pull", run!.id);
      expect(pulled.err).toBe("");
      expect(status(local)).toBe(shellOutput(events));
      expect((await daemon.runs.getRun({ runId: run!.id })).run!.handedOffTo).toBe("local");

      const pushed = await cli(daemon, local, "handoff", "push", "--prompt", "recall", "--json");
      expect(pushed.err).toBe("");
      const second = JSON.parse(pushed.out) as { id: string };
      const final = (await watchToEnd(daemon, second.id)).pop()!;
      expect(final).toMatchObject({ status: RunStatus.COMPLETED, handoffResume: "transcript", handoffSourceRunId: run!.id, mode: RunMode.BACKGROUND });
      const later: RunEvent[] = [];
      for await (const res of daemon.runs.streamEvents({ runId: second.id })) later.push(...res.events);
      // The transcript came from paddock's own events: the earlier prompt and what the agent said.
      expect(said(later)).toMatch(/recall: context: The conversation so far \(paddock run run_\w+.*User \(task\): say:remember_the_word_zebra.*Agent: remember the word zebra/);
      const lines = later.flatMap((e) => (e.kind.case === "log" && e.kind.value.stream === "handoff" ? [e.kind.value.text] : []));
      expect(lines.join("\n")).toMatch(/^resume: transcript: the agent cannot load sessions/m);
    } finally {
      for (const d of [repo, local]) rmSync(d, { recursive: true, force: true });
    }
  });

  test("hostile sandboxes: planted hooks and config never run on the host; a bundle with a path out of the repository, or a session file out of the home, is refused", async ({ daemon }) => {
    const repo = makeRepo();
    const local = clone(repo);
    const marks = tempDir("handoff-marks");
    chmodSync(marks, 0o777);
    try {
      const plant = `set -e
mkdir -p .git/hooks
for h in post-checkout post-merge reference-transaction pre-commit; do printf '#!/bin/sh\ntouch ${marks}/hook-'$h'\n' > .git/hooks/$h; chmod +x .git/hooks/$h; done
git config core.hooksPath .git/hooks
git config core.fsmonitor "touch ${marks}/fsmonitor"
git config filter.evil.smudge "touch ${marks}/smudge; cat"
echo '* filter=evil' > .gitattributes
echo data > planted.txt`;
      const { task } = await daemon.tasks.createTask({ title: "plant", repository: repo });
      const { run } = await daemon.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", plant] });
      expect((await watchToEnd(daemon, run!.id)).pop()!.status).toBe(RunStatus.COMPLETED);
      const config = readFileSync(join(local, ".git", "config"));
      const pulled = await cli(daemon, local, "handoff", "pull", run!.id);
      expect(pulled.err).toBe("");
      expect(readdirSync(marks)).toEqual([]); // nothing planted ran, in the sandbox's export or here
      expect(readFileSync(join(local, ".git", "config"))).toEqual(config);
      expect(readFileSync(join(local, ".gitattributes"), "utf8")).toBe("* filter=evil\n"); // data, in the tree
      expect(existsSync(join(local, ".git", "hooks", "post-checkout"))).toBe(false);
      expect(status(local)).toBe("?? .gitattributes\n?? planted.txt\n");

      // A bundle whose tree reaches out of the repository ("..") fails git's object checks.
      const forge = tempDir("handoff-forge");
      sh(forge, "git", "init", "--quiet");
      const blob = execFileSync("git", ["hash-object", "-w", "--stdin"], { cwd: forge, input: "owned\n", encoding: "utf8" }).trim();
      const inner = execFileSync("git", ["mktree"], { cwd: forge, input: `100644 blob ${blob}\tescape\n`, encoding: "utf8" }).trim();
      const evilTree = execFileSync("git", ["hash-object", "-t", "tree", "--literally", "-w", "--stdin"], { cwd: forge, input: Buffer.concat([Buffer.from("40000 ..\0"), Buffer.from(inner, "hex")]), encoding: "utf8" }).trim();
      const commit = (tree: string, ...parents: string[]) => execFileSync("git", ["commit-tree", tree, ...parents.flatMap((p) => ["-p", p]), "-m", "x"], { cwd: forge, env: gitEnv, encoding: "utf8" }).trim();
      const head = commit(inner);
      const index = commit(evilTree, head);
      const worktree = commit(evilTree, index);
      sh(forge, "git", "update-ref", "refs/paddock/handoff", worktree);
      const bundle = join(forge, "evil.bundle");
      sh(forge, "git", "bundle", "create", "--quiet", bundle, "refs/paddock/handoff");
      const clean = clone(repo);
      const manifest = create(HandoffManifestSchema, { headCommit: head, indexCommit: index, worktreeCommit: worktree });
      const gitDir = join(clean, ".git");
      const refused = await applyHandoff({ top: clean, gitDir, bundle, manifest, runId: "run_evil", branch: "paddock/run_evil" }).then(() => null, (e: unknown) => ConnectError.from(e));
      expect(refused?.code).toBe(Code.DataLoss);
      expect(refused?.rawMessage).toMatch(/^the handoff bundle was refused: git's object checks refused the bundle: .*hasDotdot: contains '\.\.'/);
      expect(existsSync(join(clean, "..", "escape"))).toBe(false);
      expect(sh(clean, "git", "for-each-ref", "refs/heads", "--format=%(refname)")).toBe("refs/heads/main");

      // A manifest naming a session file out of the agent's home is refused before anything is fetched.
      const outside = create(HandoffManifestSchema, { headCommit: head, indexCommit: index, worktreeCommit: worktree, conversationCommit: head, sessionFiles: [{ path: "../../.bashrc", format: "claude" }] });
      const home = await applyHandoff({ top: clean, gitDir, bundle, manifest: outside, runId: "run_evil", branch: "paddock/run_evil" }).then(() => null, (e: unknown) => ConnectError.from(e));
      expect(home?.rawMessage).toBe('the handoff names a session file outside the agent\'s home: "../../.bashrc"');
      for (const d of [forge, clean]) rmSync(d, { recursive: true, force: true });
    } finally {
      for (const d of [repo, local, marks]) rmSync(d, { recursive: true, force: true });
    }
  });
});

describe("handoff limits", () => {
  test("an oversized state is refused both ways, naming the limit", async () => {
    const daemon = await startDaemon({ config: { handoffMaxBytes: "64k" } });
    const repo = makeRepo();
    const local = clone(repo);
    try {
      const { task } = await daemon.tasks.createTask({ title: "big", repository: repo });
      const { run } = await daemon.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", "head -c 300000 /dev/urandom > big.bin"] });
      expect((await watchToEnd(daemon, run!.id)).pop()!.status).toBe(RunStatus.COMPLETED);
      const out = await cli(daemon, local, "handoff", "pull", run!.id);
      expect(out.code).toBe(EXIT.precondition);
      expect(out.err).toMatch(/has no handoff state: it could not be taken: the run's handoff bundle is over the daemon's limit of 65536 bytes \(--handoff-max-bytes\)/);
      expect(status(local)).toBe(""); // untouched

      execFileSync("sh", ["-c", "head -c 300000 /dev/urandom > big.bin"], { cwd: local });
      const pushed = await cli(daemon, local, "handoff", "push", "--task", task!.id);
      expect(pushed.code).toBe(EXIT.usage);
      expect(pushed.err).toMatch(/the uploaded handoff bundle is over the daemon's limit of 65536 bytes/);
    } finally {
      await cleanUp(daemon);
      for (const d of [repo, local]) rmSync(d, { recursive: true, force: true });
    }
  });
});

describe("handoff keeping", () => {
  test("--handoff-keep none: a finished run keeps no state and says so; a running one handed off still does", async () => {
    const daemon = await startDaemon({ config: { handoffKeep: "none" } });
    const repo = makeRepo();
    const local = clone(repo);
    try {
      const { task } = await daemon.tasks.createTask({ title: "k", repository: repo });
      const { run } = await daemon.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", "echo x > u.txt"] });
      await watchToEnd(daemon, run!.id);
      const none = await cli(daemon, local, "handoff", "pull", run!.id);
      expect(none.code).toBe(EXIT.precondition);
      expect(none.err).toContain(`run ${run!.id} has no handoff state: none was kept when the run was cleaned`);

      const live = await acpRun(daemon, repo, PLAIN_AGENT, "say:hello", `shell:${b64("echo y > v.txt")}`);
      await followUntil(daemon, live.id, turnEnded);
      const pulled = await cli(daemon, local, "handoff", "pull", live.id);
      expect(pulled.err).toBe("");
      expect(status(local)).toBe("?? v.txt\n");

      // Over the unix socket too (the upload is a client stream: HTTP/2 there as well).
      const err: string[] = [];
      const out: string[] = [];
      const code = await runClientCommand(["handoff", "push", "--address", `unix:${join(daemon.dataDir, "p.sock")}`, "--json", "--", "sh", "-c", STATUS], {
        out: (l) => out.push(l),
        err: (l) => err.push(l),
        env: {},
        cwd: local,
        defaultSocket: "/nonexistent/paddock.sock",
        signal: new AbortController().signal,
      });
      expect(err.join("\n")).toBe("");
      expect(code).toBe(EXIT.ok);
      const third = JSON.parse(out.join("")) as { id: string };
      expect((await watchToEnd(daemon, third.id)).pop()!.status).toBe(RunStatus.COMPLETED);
    } finally {
      await cleanUp(daemon);
      for (const d of [repo, local]) rmSync(d, { recursive: true, force: true });
    }
  });
});

describe.runIf(dockerAvailable())("handoff with docker sandboxes", () => {
  /** The agent's stdout lines, as `git status --porcelain` printed them. */
  const stdoutOf = async (d: Daemon, runId: string) => (await allLogs(d, runId)).filter((l) => l.stream === "stdout").map((l) => `${l.text}\n`).join("");

  test("every kind of change out of a container and back into another, byte for byte", async ({ daemon }) => {
    const repo = makeRepo();
    const local = clone(repo);
    try {
      const { task } = await daemon.tasks.createTask({ title: "docker handoff", repository: repo });
      const { run } = await daemon.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["sh", "-c", CHANGES] });
      expect((await watchToEnd(daemon, run!.id, 180_000)).pop()!.status).toBe(RunStatus.COMPLETED);
      const inSandbox = await stdoutOf(daemon, run!.id);
      expect(inSandbox).toContain(`R  "old name.txt" -> "new name.txt"`);
      const pulled = await cli(daemon, local, "handoff", "pull", run!.id);
      expect(pulled.err).toBe("");
      expect(status(local)).toBe(inSandbox);

      const before = status(local);
      const pushed = await cli(daemon, local, "handoff", "push", "--provider", "docker", "--json", "--", "sh", "-c", STATUS);
      expect(pushed.err).toBe("");
      const second = JSON.parse(pushed.out) as { id: string; provider: string };
      expect(second.provider).toBe("docker");
      expect((await watchToEnd(daemon, second.id, 180_000)).pop()!).toMatchObject({ status: RunStatus.COMPLETED, fromHandoff: true, handoffResume: "none" });
      expect(await stdoutOf(daemon, second.id)).toBe(before);
    } finally {
      for (const d of [repo, local]) rmSync(d, { recursive: true, force: true });
    }
  });
});
