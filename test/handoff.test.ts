import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect } from "vitest";
import { EXIT, runClientCommand } from "../src/cli/commands.js";
import { AgentKind, RunMode, RunStatus, type RunEvent } from "../src/gen/paddock/v1/task_run_pb.js";
import { gitEnv, sh, startDaemon, cleanUp, tempDir, test, watchToEnd, type Daemon } from "./fixtures.js";

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
  const code = await runClientCommand([...argv, "--address", d.url], {
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
});
