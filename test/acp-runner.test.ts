/**
 * `paddock agent` as the ACP client of a real ACP agent process (a scripted agent built
 * on the SDK's agent side), started as a sandbox starts it: the real runner binary under
 * tsx, a checkout of a real git repository, its HTTP API with a real sandbox token.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { runnerCommand } from "../src/app.js";
import { issueSandboxToken, loadOrCreateSandboxKeys } from "../src/auth/sandbox-token.js";
import { runnerEnvironment } from "../src/agent/runner-env.js";
import { RUNNER_INFO_FILE, type RunnerEvent, type RunnerHealth } from "../src/agent/runner-protocol.js";
import { gitEnv, sh, tempDir } from "./fixtures.js";

const AGENT = resolve(import.meta.dirname, "fixtures/scripted-acp-agent.mjs");
const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface RunnerOptions {
  prompt: string;
  mode?: "background" | "interactive";
  policy?: "auto_allow" | "ask" | "deny";
  permissionTimeoutMs?: number;
  /** The agent's own uid (the runner is root): the workspace is handed to it. */
  uid?: number;
  hold?: boolean;
  /** Adds to the repository before the runner checks it out. */
  prepareRepo?: (repo: string) => void;
}

/** A git repository with one commit, in a directory every uid may traverse. */
function makeRepo(root: string, prepare?: (repo: string) => void): string {
  const repo = join(root, "repo");
  mkdirSync(repo);
  sh(repo, "git", "init", "--quiet", "-b", "main");
  writeFileSync(join(repo, "README.md"), "hello\n");
  prepare?.(repo);
  sh(repo, "git", "add", ".");
  sh(repo, "git", "commit", "--quiet", "-m", "initial");
  return repo;
}

async function startRunner(o: RunnerOptions) {
  const root = tempDir("acp");
  chmodSync(root, 0o711); // the agent's uid reaches its workspace and home through it
  const repo = makeRepo(root, o.prepareRepo);
  const keys = await loadOrCreateSandboxKeys(join(root, "keys"));
  const runId = "run_acp1";
  const workspace = join(root, "workspace");
  const home = join(root, "home");
  const state = join(root, "state");
  const [file, ...args] = runnerCommand();
  const output: string[] = [];
  const child: ChildProcess = spawn(file!, args, {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...gitEnv,
      ...runnerEnvironment({
        PADDOCK_RUN_ID: runId,
        PADDOCK_RUNNER_HOST: "127.0.0.1",
        PADDOCK_RUNNER_PORT: 0,
        PADDOCK_WORKDIR: workspace,
        PADDOCK_STATE_DIR: state,
        PADDOCK_SOURCE: repo,
        PADDOCK_RESULT_BRANCH: `paddock/${runId}`,
        PADDOCK_AGENT_COMMAND: JSON.stringify([process.execPath, AGENT]),
        PADDOCK_AGENT_KIND: "acp",
        PADDOCK_RUN_MODE: o.mode ?? "background",
        PADDOCK_PERMISSION_POLICY: o.policy ?? "auto_allow",
        PADDOCK_PERMISSION_TIMEOUT_MS: o.permissionTimeoutMs,
        PADDOCK_PROMPT: o.prompt,
        PADDOCK_HOLD: o.hold ? "1" : "0",
        PADDOCK_GRACE_MS: 5_000,
        PADDOCK_AGENT_UID: o.uid,
        PADDOCK_AGENT_GID: o.uid,
        PADDOCK_AGENT_HOME: home,
        PADDOCK_AGENT_PATH: process.env.PATH,
        JWT_PUBLIC_KEY: keys.publicKeyPem,
      }),
    },
  });
  child.stdout!.on("data", (c: Buffer) => output.push(c.toString()));
  child.stderr!.on("data", (c: Buffer) => output.push(c.toString()));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
    rmSync(root, { recursive: true, force: true });
  });

  let port = 0;
  while (!port) {
    if (child.exitCode !== null) throw new Error(`the runner exited: ${output.join("")}`);
    try {
      port = (JSON.parse(readFileSync(join(state, RUNNER_INFO_FILE), "utf8")) as { port: number }).port;
    } catch {
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const token = await issueSandboxToken(keys, runId, 600);
  const base = `http://127.0.0.1:${port}`;
  const call = async <T = Record<string, unknown>>(method: "GET" | "POST", path: string, body?: unknown) => {
    const res = await fetch(base + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as T };
  };
  const events: RunnerEvent[] = [];
  /** Reads events (long polls) until one matches; every event read stays in `events`. */
  const waitForEvent = async (match: (e: RunnerEvent) => boolean): Promise<RunnerEvent> => {
    for (let i = 0; ; i++) {
      const found = events.find(match);
      if (found) return found;
      if (i > 600) throw new Error(`no such event; got ${JSON.stringify(events)}\nrunner: ${output.join("")}`);
      const after = events.at(-1)?.seq ?? 0;
      const { body } = await call<{ events: RunnerEvent[] }>("GET", `/events?after_seq=${after}&wait_ms=1000`);
      events.push(...body.events);
    }
  };
  const waitForHealth = async (match: (h: RunnerHealth) => boolean): Promise<RunnerHealth> => {
    for (let i = 0; ; i++) {
      const { body } = await call<RunnerHealth>("GET", "/health");
      if (match(body)) return body;
      if (i > 1000) throw new Error(`health never matched; last ${JSON.stringify(body)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const agentLines = () => events.flatMap((e) => (e.kind === "log" && e.stream === "agent" ? [e.text] : []));
  const exit = () => waitForEvent((e) => e.kind === "exit") as Promise<Extract<RunnerEvent, { kind: "exit" }>>;
  const shutdown = async () => {
    await call("POST", "/shutdown");
    await exited;
  };
  return { call, events, waitForEvent, waitForHealth, agentLines, exit, shutdown, workspace, home, root };
}

const prompt = (promptId: string, text: string, by: string) => ({ promptId, content: [{ type: "text", text }], by });

describe("paddock agent with an ACP agent", () => {
  it("runs a background task: updates in order, readable lines, an allowed write, exit 0 on end_turn", async () => {
    const r = await startRunner({ prompt: "chunks plan write:notes/hello.txt env:IS_SANDBOX env:CLAUDE_CONFIG_DIR" });
    const exit = await r.exit();
    expect(exit).toMatchObject({ exitCode: 0, stage: "agent" });
    expect(exit).not.toHaveProperty("reason");

    const kinds = r.events.filter((e) => e.kind !== "log").map((e) => (e.kind === "acp" ? `acp:${e.updateKind}` : e.kind));
    expect(kinds).toEqual([
      "prompt",
      ...Array<string>(4).fill("acp:agent_message_chunk"),
      "acp:plan",
      "acp:tool_call",
      "permission",
      "permission_resolved",
      "acp:tool_call_update",
      "acp:agent_message_chunk",
      "acp:agent_message_chunk",
      "turn_end",
      "exit",
    ]);
    expect(r.events.map((e) => e.seq)).toEqual(r.events.map((_, i) => i + 1));
    expect(r.events[0]).toMatchObject({ kind: "prompt", promptId: "task", by: "task" });
    const toolCall = r.events.find((e) => e.kind === "acp" && e.updateKind === "tool_call");
    expect(toolCall).toMatchObject({ update: { content: [{ type: "diff", path: join(r.workspace, "notes/hello.txt") }] } });
    expect(r.events.find((e) => e.kind === "permission_resolved")).toMatchObject({ optionId: "allow", by: "policy" });
    expect(r.events.find((e) => e.kind === "turn_end")).toMatchObject({ promptId: "task", stopReason: "end_turn" });

    expect(r.agentLines()).toEqual([
      "Hello from the agent.",
      "Second line",
      "Third line without newline",
      "plan 1/2: Read the code (completed); Write the file (in_progress)",
      "tool: Write notes/hello.txt [edit]",
      "tool completed: Write notes/hello.txt",
      "IS_SANDBOX=1",
      `CLAUDE_CONFIG_DIR=${join(r.home, ".claude")}`,
    ]);
    expect(readFileSync(join(r.workspace, "notes/hello.txt"), "utf8")).toBe("written by the scripted agent\n");
    expect(existsSync(join(r.home, ".claude")) && existsSync(join(r.home, ".codex"))).toBe(true);
    await r.shutdown();
  });

  it("fails a background run whose turn ends with another stopReason, saying which", async () => {
    const r = await startRunner({ prompt: "say:thinking stop:max_tokens" });
    const exit = await r.exit();
    expect(exit.exitCode).not.toBe(0);
    expect(exit.reason).toContain("max_tokens");
    expect(r.events.find((e) => e.kind === "turn_end")).toMatchObject({ stopReason: "max_tokens" });
    await r.shutdown();
  });

  it("reports an agent that crashes mid-turn", async () => {
    const r = await startRunner({ prompt: "say:starting crash" });
    const exit = await r.exit();
    expect(exit).toMatchObject({ exitCode: 3, reason: "agent crashed mid-turn" });
    expect(r.agentLines()).toEqual(["starting", "about to crash"]);
    expect(r.events.some((e) => e.kind === "turn_end")).toBe(false);
    await r.shutdown();
  });

  it("keeps an interactive run up: follow-up prompts in order, attributed, a cancelled turn, then a stop that cancels first", async () => {
    const r = await startRunner({ prompt: "say:first", mode: "interactive" });
    await r.waitForEvent((e) => e.kind === "turn_end" && e.promptId === "task");
    expect(await r.waitForHealth((h) => h.turn === "idle")).toMatchObject({ agent: "running", agentKind: "acp", pendingPermissions: 0, queuedPrompts: 0 });

    const second = await r.call("POST", "/prompt", prompt("p2", "say:second", "alice"));
    expect(second).toMatchObject({ status: 200, body: { ok: true, duplicate: false } });
    const third = await r.call("POST", "/prompt", prompt("p3", "say:third", "bob"));
    expect((await r.call("POST", "/prompt", prompt("p2", "say:second", "alice"))).body).toMatchObject({ duplicate: true, seq: second.body.seq });
    await r.waitForEvent((e) => e.kind === "turn_end" && e.promptId === "p3");
    const promptEvent = r.events.find((e) => e.seq === third.body.seq);
    expect(promptEvent).toMatchObject({ kind: "prompt", promptId: "p3", by: "bob" });
    expect(r.events.filter((e) => e.kind === "prompt").map((e) => e.kind === "prompt" && `${e.promptId} by ${e.by}`)).toEqual(["task by task", "p2 by alice", "p3 by bob"]);
    expect(r.agentLines()).toEqual(["first", "second", "third"]);

    // A turn that waits for session/cancel: POST /cancel-turn ends it, the run stays.
    await r.call("POST", "/prompt", prompt("p4", "hang", "alice"));
    await r.waitForEvent((e) => e.kind === "log" && e.text === "working on it");
    expect((await r.call("GET", "/health")).body).toMatchObject({ turn: "working" });
    expect((await r.call("POST", "/cancel-turn")).body).toMatchObject({ ok: true, cancelled: true });
    expect(await r.waitForEvent((e) => e.kind === "turn_end" && e.promptId === "p4")).toMatchObject({ stopReason: "cancelled" });
    await r.call("POST", "/prompt", prompt("p5", "say:still_here", "alice"));
    await r.waitForEvent((e) => e.kind === "turn_end" && e.promptId === "p5");
    expect(r.agentLines().at(-1)).toBe("still here");

    // Stopping the run mid-turn: the turn is cancelled (session/cancel) before the agent is ended.
    const sixth = await r.call<{ seq: number }>("POST", "/prompt", prompt("p6", "hang", "alice"));
    await r.waitForEvent((e) => e.kind === "log" && e.text === "working on it" && e.seq > sixth.body.seq);
    expect((await r.call("POST", "/cancel")).status).toBe(200);
    await r.exit();
    const tail = r.events.filter((e) => e.kind === "turn_end" || e.kind === "exit").slice(-2);
    expect(tail.map((e) => e.kind)).toEqual(["turn_end", "exit"]);
    expect(tail[0]).toMatchObject({ promptId: "p6", stopReason: "cancelled" });
    expect((await r.call("POST", "/prompt", prompt("p7", "say:late", "alice"))).status).toBe(409);
    await r.shutdown();
  });

  it("parks a permission request under the ask policy until a client answers; the first answer wins", async () => {
    const r = await startRunner({ prompt: "write:asked.txt", policy: "ask" });
    const request = await r.waitForEvent((e) => e.kind === "permission");
    if (request.kind !== "permission") throw new Error("unreachable");
    expect(request.options.map((o) => o.kind)).toEqual(["allow_once", "allow_always", "reject_once"]);
    expect(request.expiresAt).toBeGreaterThan(Date.now());
    expect(request.toolCall).toMatchObject({ title: "Write asked.txt" });
    expect(await r.waitForHealth((h) => h.pendingPermissions === 1)).toMatchObject({ turn: "working" });

    expect((await r.call("POST", "/prompt", prompt("p2", "say:more", "alice"))).status).toBe(409); // background: one turn
    expect(await r.call("POST", "/permission", { requestId: request.requestId, optionId: "nope", by: "bob" })).toMatchObject({ status: 400, body: { error: expect.stringContaining("optionId") } });
    expect((await r.call("POST", "/permission", { requestId: "perm_unknown", optionId: "allow", by: "bob" })).status).toBe(404);
    expect((await r.call("POST", "/permission", { requestId: request.requestId, optionId: "allow", by: "bob" })).status).toBe(200);
    expect((await r.call("POST", "/permission", { requestId: request.requestId, optionId: "reject", by: "carol" })).status).toBe(409);

    expect(await r.exit()).toMatchObject({ exitCode: 0 });
    expect(r.events.filter((e) => e.kind === "permission_resolved")).toEqual([expect.objectContaining({ requestId: request.requestId, optionId: "allow", by: "bob" })]);
    expect(readFileSync(join(r.workspace, "asked.txt"), "utf8")).toBe("written by the scripted agent\n");
    await r.shutdown();
  });

  it("rejects a parked permission request at its timeout", async () => {
    const r = await startRunner({ prompt: "write:late.txt", policy: "ask", permissionTimeoutMs: 300 });
    expect(await r.waitForEvent((e) => e.kind === "permission_resolved")).toMatchObject({ optionId: "reject", by: "timeout" });
    expect(await r.exit()).toMatchObject({ exitCode: 0 });
    expect(r.agentLines()).toEqual(["tool: Write late.txt [edit]", "tool failed: Write late.txt", "permission rejected"]);
    expect(existsSync(join(r.workspace, "late.txt"))).toBe(false);
    await r.shutdown();
  });

  it("rejects every request under the deny policy", async () => {
    const r = await startRunner({ prompt: "write:denied.txt", policy: "deny" });
    expect(await r.waitForEvent((e) => e.kind === "permission_resolved")).toMatchObject({ optionId: "reject", by: "policy" });
    expect(await r.exit()).toMatchObject({ exitCode: 0 });
    expect(existsSync(join(r.workspace, "denied.txt"))).toBe(false);
    await r.shutdown();
  });

  it.each([
    { as: "as the agent's own uid", uid: isRoot ? NOBODY : undefined },
    { as: "by the runner itself when the agent shares its uid", uid: undefined },
  ])("confines the agent's fs requests to the workspace, $as", async ({ uid }) => {
    const outside = tempDir("acp-outside");
    chmodSync(outside, 0o777); // the agent's uid could write here: only the runner's check stops it
    cleanups.push(() => rmSync(outside, { recursive: true, force: true }));
    writeFileSync(join(outside, "secret.txt"), "not for the agent\n", { mode: 0o644 });
    const steps = (ws: string) =>
      [
        "whoami",
        "rawwrite:inside/new.txt",
        `rawwrite:${ws}/../escaped-dotdot.txt`,
        "rawwrite:link/escaped-dir.txt",
        "rawwrite:filelink",
        `rawwrite:${outside}/absolute.txt`,
        "read:link/secret.txt",
        "read:README.md",
      ].join(" ");
    // The workspace's path is known only once the runner made it: the steps go in a follow-up prompt.
    const r = await startRunner({
      prompt: "say:ready",
      mode: "interactive",
      uid,
      prepareRepo: (repo) => {
        symlinkSync(outside, join(repo, "link"));
        symlinkSync(join(outside, "target.txt"), join(repo, "filelink"));
      },
    });
    await r.waitForEvent((e) => e.kind === "turn_end");
    await r.call("POST", "/prompt", prompt("p2", steps(r.workspace), "alice"));
    await r.waitForEvent((e) => e.kind === "turn_end" && e.promptId === "p2");
    const lines = r.agentLines().slice(1);
    expect(lines[0]).toBe(`uid=${uid ?? process.getuid?.()}`);
    expect(lines[1]).toBe("write ok");
    expect(lines[2]).toMatch(/^write refused: .*"\.\." is not allowed/);
    expect(lines[3]).toMatch(/^write refused: .*outside the workspace/);
    expect(lines[4]).toMatch(/^write refused: .*symbolic link/);
    expect(lines[5]).toMatch(/^write refused: .*outside the workspace/);
    expect(lines[6]).toMatch(/^read refused: .*outside the workspace/);
    expect(lines[7]).toBe('read: "hello\\n"');
    expect(readFileSync(join(r.workspace, "inside/new.txt"), "utf8")).toBe("planted\n");
    if (uid !== undefined) expect(sh(r.workspace, "stat", "-c", "%u", "inside/new.txt")).toBe(String(uid)); // written as the agent
    for (const f of ["escaped-dotdot.txt", "escaped-dir.txt", "target.txt", "absolute.txt"]) {
      expect(existsSync(join(outside, f)) || existsSync(join(r.root, f))).toBe(false);
    }
    await r.shutdown();
  });

  it("fails a run whose agent refuses to open a session, with the agent's message", async () => {
    const r = await startRunner({ prompt: "say:never", hold: true });
    await r.call("POST", "/start", { env: { SCRIPTED_ACP_FAIL: "session/new" } });
    const exit = await r.exit();
    expect(exit.exitCode).not.toBe(0);
    expect(exit.reason).toMatch(/session\/new failed: .*no credentials/);
    expect(r.agentLines()).toEqual([]);
    await r.shutdown();
  });

  it("redacts the run's secrets from recorded updates and lines", async () => {
    const secret = "s3cr3t-token-value-42";
    const r = await startRunner({ prompt: "env:SECRET_TOKEN", hold: true });
    expect((await r.call("POST", "/start", { env: { SECRET_TOKEN: secret }, redact: [{ name: "SECRET_TOKEN", value: secret }] })).status).toBe(200);
    await r.exit();
    expect(r.agentLines()).toEqual(["SECRET_TOKEN=[secret:SECRET_TOKEN]"]);
    expect(JSON.stringify(r.events)).not.toContain(secret);
    await r.shutdown();
  });
});
