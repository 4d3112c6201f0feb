import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import Docker from "dockerode";
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { resolve } from "node:path";
import { beforeAll, describe, expect } from "vitest";
import { ensureOpenNetwork } from "../src/sandbox/docker/egress-network.js";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { RunStatus, type RunEvent } from "../src/gen/paddock/v1/task_run_pb.js";
import { startFakeAnthropic } from "./fake-anthropic.js";
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
});
