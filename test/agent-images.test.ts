import { client, methods, ndJsonStream, PROTOCOL_VERSION, type InitializeRequest } from "@agentclientprotocol/sdk";
import { execFile, execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Readable, Writable } from "node:stream";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { startFakeAnthropic, type FakeAnthropic, type FakeReply } from "./fake-anthropic.js";
import { dockerAvailable } from "./fixtures.js";

/**
 * The paddock-agents image with the real third-party agents in it: Claude Code and
 * claude-code-acp against a fake Anthropic API that this file starts. Containers run as
 * the agent user, straight from `docker run` (not through paddock), on an internal Docker
 * network whose only reachable address is the host's gateway, where the fake listens.
 * The image is built (scripts/build-images.sh --agents, about a minute) if it is missing.
 */
const ROOT = resolve(import.meta.dirname, "..");
const IMAGE = process.env.PADDOCK_AGENTS_IMAGE ?? "paddock-agents:latest";
const KEY = "test-key-123";
const CLAUDE_CODE_VERSION = (JSON.parse(readFileSync(join(ROOT, "sandbox-images/agents/package.json"), "utf8")) as { dependencies: Record<string, string> })
  .dependencies["@anthropic-ai/claude-code"]!;
const dockerUp = dockerAvailable();
const run = promisify(execFile);

/** The script of the end-to-end check: write a file, then say so. */
function writeThenDone(path: string): FakeReply[] {
  return [{ toolUse: { name: "Write", input: { file_path: path, content: "hello from the fake model\n" } } }, { text: "done" }];
}

describe.runIf(dockerUp)("the paddock-agents image", () => {
  const network = `paddock-test-agents-${randomBytes(4).toString("hex")}`;
  let gateway = "";
  let scratch = "";
  let resolvConf = "";
  const containers: string[] = [];
  const fakes: FakeAnthropic[] = [];

  beforeAll(() => {
    try {
      execFileSync("docker", ["image", "inspect", IMAGE], { stdio: "ignore" });
    } catch {
      execFileSync("bash", ["scripts/build-images.sh", "--agents"], { cwd: ROOT, stdio: "inherit" });
    }
    // Internal: no route out of the network; its gateway is this host, where the fake listens.
    execFileSync("docker", ["network", "create", "--internal", "--label", "paddock.test=agent-images", network], { stdio: "ignore" });
    gateway = execFileSync("docker", ["network", "inspect", network, "-f", "{{(index .IPAM.Config 0).Gateway}}"], { encoding: "utf8" }).trim();
    scratch = mkdtempSync(join(tmpdir(), "paddock-agent-images-"));
    // A resolver that is not there: any name lookup fails inside the container, so no test
    // can cause a real DNS query (Docker's embedded DNS would forward one to the host's).
    resolvConf = join(scratch, "resolv.conf");
    writeFileSync(resolvConf, "nameserver 127.0.0.1\n");
  }, 15 * 60_000);

  afterEach(async () => {
    // Most are gone already (--rm); claude-code-acp stays after its stdin closes.
    for (const name of containers.splice(0)) spawnSync("docker", ["rm", "-f", "-v", name], { stdio: "ignore" });
    await Promise.all(fakes.splice(0).map((f) => f.close()));
  });

  afterAll(() => {
    if (gateway) execFileSync("docker", ["network", "rm", network], { stdio: "ignore" });
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  async function fakeApi(replies: FakeReply[]): Promise<FakeAnthropic> {
    const fake = await startFakeAnthropic({ host: gateway, replies });
    fakes.push(fake);
    return fake;
  }

  /** An empty workspace the agent user owns, mounted at /workspace. */
  function workspace(): string {
    const dir = mkdtempSync(join(scratch, "ws-"));
    chownSync(dir, 1000, 1000);
    return dir;
  }

  /** `docker run` arguments for an agent container as uid 1000 on the internal network. */
  function agentRun(ws: string, fake: FakeAnthropic, entrypoint: string, extra: string[] = []): string[] {
    const name = `paddock-test-agent-${randomBytes(4).toString("hex")}`;
    containers.push(name);
    return [
      "run", "--rm", "--name", name, "--network", network, "--user", "1000:1000", "--security-opt", "no-new-privileges",
      "-v", `${resolvConf}:/etc/resolv.conf:ro`, "-v", `${ws}:/workspace`, "-w", "/workspace",
      "-e", "IS_SANDBOX=1", "-e", "HOME=/home/agent", "-e", `ANTHROPIC_BASE_URL=${fake.url()}`, "-e", `ANTHROPIC_API_KEY=${KEY}`,
      ...extra, "--entrypoint", entrypoint, IMAGE,
    ];
  }

  test("holds node, Claude Code, claude-code-acp and codex-acp on the agent user's PATH", () => {
    const out = execFileSync(
      "docker",
      ["run", "--rm", "--network", "none", "--user", "1000:1000", "--entrypoint", "sh", IMAGE, "-c",
        "id -un; node --version; claude --version; codex-acp --help; command -v claude-code-acp"],
      { encoding: "utf8" },
    );
    const [user, node, claude] = out.split("\n");
    expect(user).toBe("agent");
    expect(node).toMatch(/^v24\./);
    expect(claude).toBe(`${CLAUDE_CODE_VERSION} (Claude Code)`);
    expect(out).toContain("Usage: codex-acp");
    expect(out).toContain("/usr/local/bin/claude-code-acp");
  });

  test("claude -p writes the file a fake model asks for, sending the API key it was given", async () => {
    const fake = await fakeApi(writeThenDone("/workspace/hello.txt"));
    const ws = workspace();

    const { stdout } = await run("docker", [...agentRun(ws, fake, "claude"), "-p", "write hello.txt", "--permission-mode", "bypassPermissions"], { timeout: 180_000 });

    expect(stdout.trim()).toBe("done");
    expect(readFileSync(join(ws, "hello.txt"), "utf8")).toBe("hello from the fake model\n");
    expect(fake.pending()).toBe(0);
    for (const r of fake.scripted) expect(r.headers["x-api-key"]).toBe(KEY);
    // The second turn carries the Write's result back to the model.
    expect(JSON.stringify(fake.scripted[1]!.body)).toContain("tool_result");
  }, 180_000);

  /** Runs claude-code-acp with stdio attached and connects the ACP SDK's client side. */
  function acpAgent(ws: string, fake: FakeAnthropic) {
    const child = spawn("docker", agentRun(ws, fake, "claude-code-acp", ["-i"]), { stdio: ["pipe", "pipe", "inherit"] });
    const stream = ndJsonStream(Writable.toWeb(child.stdin) as WritableStream<Uint8Array>, Readable.toWeb(child.stdout) as ReadableStream<Uint8Array>);
    return { child, stream };
  }

  const initialize: InitializeRequest = {
    protocolVersion: PROTOCOL_VERSION,
    clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false },
  };

  test("claude-code-acp answers initialize and session/new with its capabilities", async () => {
    const fake = await fakeApi([]);
    const { stream } = acpAgent(workspace(), fake);

    const { init, session } = await client({ name: "agent-images test" }).connectWith(stream, async (agent) => {
      const init = await agent.request(methods.agent.initialize, initialize);
      const session = await agent.request(methods.agent.session.new, { cwd: "/workspace", mcpServers: [] });
      return { init, session };
    });

    expect(init.protocolVersion).toBe(PROTOCOL_VERSION);
    expect(init.agentInfo?.name).toBe("@zed-industries/claude-code-acp");
    expect(init.agentCapabilities?.loadSession).toBe(true);
    expect(init.agentCapabilities?.sessionCapabilities?.resume).toBeDefined();
    expect(session.sessionId).toMatch(/^[0-9a-f-]{36}$/);
    // IS_SANDBOX=1 lets a non-root agent offer the permission bypass (auto_allow relies on it).
    expect(session.modes?.availableModes.map((m) => m.id)).toContain("bypassPermissions");
  }, 120_000);

  test("claude-code-acp runs a prompt turn through the installed Claude Code: a Write tool call, then end_turn", async () => {
    const fake = await fakeApi(writeThenDone("/workspace/hello.txt"));
    const ws = workspace();
    const { stream } = acpAgent(ws, fake);
    const updates: { sessionUpdate: string; title?: string | null }[] = [];

    const app = client({ name: "agent-images test" }).onNotification(methods.client.session.update, ({ params }) => {
      updates.push(params.update as { sessionUpdate: string; title?: string | null });
    });
    const stop = await app.connectWith(stream, async (agent) => {
      await agent.request(methods.agent.initialize, initialize);
      const { sessionId } = await agent.request(methods.agent.session.new, { cwd: "/workspace", mcpServers: [] });
      await agent.request(methods.agent.session.setMode, { sessionId, modeId: "bypassPermissions" });
      return agent.request(methods.agent.session.prompt, { sessionId, prompt: [{ type: "text", text: "write hello.txt" }] });
    });

    expect(stop.stopReason).toBe("end_turn");
    expect(readFileSync(join(ws, "hello.txt"), "utf8")).toBe("hello from the fake model\n");
    expect(updates.some((u) => u.sessionUpdate === "tool_call" && u.title === "Write /workspace/hello.txt")).toBe(true);
    for (const r of fake.scripted) expect(r.headers["x-api-key"]).toBe(KEY);
    // The installed CLI answered, not the older copy bundled in claude-code-acp's SDK.
    expect(fake.scripted[0]!.headers["user-agent"]).toMatch(new RegExp(`^claude-cli/${CLAUDE_CODE_VERSION} `));
  }, 180_000);
});

describe("the fake Anthropic API", () => {
  const post = (f: FakeAnthropic, body: object) =>
    fetch(`${f.url()}/v1/messages`, { method: "POST", headers: { "content-type": "application/json", "x-api-key": KEY }, body: JSON.stringify(body) });
  const tools = [{ name: "Write", input_schema: { type: "object" } }];

  test("streams a tool call as the real API does, and answers stream=false with the whole message", async () => {
    const fake = await startFakeAnthropic({ replies: writeThenDone("/w/a.txt") });
    try {
      const sse = await (await post(fake, { model: "m", stream: true, tools, messages: [] })).text();
      const events = [...sse.matchAll(/^event: (\S+)\ndata: (.*)$/gm)].map(([, name, data]) => ({ name, data: JSON.parse(data!) as Record<string, unknown> }));
      expect(events.map((e) => e.name).filter((n) => n !== "ping")).toEqual([
        "message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop", "message_delta", "message_stop",
      ]);
      expect(events.every((e) => e.data.type === e.name)).toBe(true);
      const json = events.filter((e) => e.name === "content_block_delta").map((e) => (e.data.delta as { partial_json: string }).partial_json).join("");
      expect(JSON.parse(json)).toEqual({ file_path: "/w/a.txt", content: "hello from the fake model\n" });
      expect(events.find((e) => e.name === "message_delta")!.data.delta).toEqual({ stop_reason: "tool_use", stop_sequence: null });

      const whole = (await (await post(fake, { model: "m", stream: false, tools, messages: [] })).json()) as { content: unknown[]; stop_reason: string };
      expect(whole.content).toEqual([{ type: "text", text: "done" }]);
      expect(whole.stop_reason).toBe("end_turn");
      expect(fake.scripted.map((r) => r.headers["x-api-key"])).toEqual([KEY, KEY]);
    } finally {
      await fake.close();
    }
  });

  test("answers side requests without tools apart from the script", async () => {
    const fake = await startFakeAnthropic({ replies: [{ text: "scripted" }], sideReply: "side" });
    try {
      const side = (await (await post(fake, { model: "m", messages: [] })).json()) as { content: { text: string }[] };
      const main = (await (await post(fake, { model: "m", tools, messages: [] })).json()) as { content: { text: string }[] };
      expect([side.content[0]!.text, main.content[0]!.text]).toEqual(["side", "scripted"]);
      expect(fake.pending()).toBe(0);
    } finally {
      await fake.close();
    }
  });
});
