import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { tempDir } from "../../test/fixtures.js";
import { issueSandboxToken, loadOrCreateSandboxKeys } from "../auth/sandbox-token.js";
import { createRunnerClient } from "../sandbox/runner-client.js";
import { runRunner } from "./runner.js";
import { readRunnerEnvironment } from "./runner-env.js";
import { RUNNER_INFO_FILE, type RunnerHealth } from "./runner-protocol.js";

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A real runner on a loopback port, holding its agent until POST /start, as in a sandbox. */
async function startRunner() {
  const dir = tempDir("hold");
  dirs.push(dir);
  const keys = await loadOrCreateSandboxKeys(dir);
  const runId = "run_hold1";
  const workdir = join(dir, "work");
  const settings = readRunnerEnvironment({
    PADDOCK_RUN_ID: runId,
    PADDOCK_RUNNER_HOST: "127.0.0.1",
    PADDOCK_RUNNER_PORT: "0",
    PADDOCK_WORKDIR: dir,
    PADDOCK_STATE_DIR: join(dir, "state"),
    PADDOCK_RESULT_BRANCH: `paddock/${runId}`,
    PADDOCK_AGENT_COMMAND: JSON.stringify(["sh", "-c", `echo agent ran; touch ${workdir}-agent-ran`]),
    PADDOCK_AGENT_HOME: join(dir, "home"),
    PADDOCK_HOLD: "1",
    JWT_PUBLIC_KEY: keys.publicKeyPem,
  });
  const done = runRunner({ settings, env: { PATH: process.env.PATH }, log: () => undefined });
  let port = 0;
  while (!port) {
    try {
      port = (JSON.parse(readFileSync(join(dir, "state", RUNNER_INFO_FILE), "utf8")) as { port: number }).port;
    } catch {
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  const runner = createRunnerClient(`http://127.0.0.1:${port}`, await issueSandboxToken(keys, runId, 600));
  const waitFor = async (want: RunnerHealth["agent"]) => {
    for (;;) {
      const h = await runner.health();
      if (h.agent === want) return h;
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { runner, done, waitFor, dir, agentRan: () => existsSync(`${workdir}-agent-ran`) };
}

describe("a runner held after setup", () => {
  it("reports ready after a successful setup and starts the agent only at POST /continue", async () => {
    const { runner, done, waitFor, agentRan, dir } = await startRunner();
    // Setup waits for the test's go: its stage is seen while it runs, deterministically.
    await runner.start({ setupScript: `while [ ! -e ${dir}/go ]; do sleep 0.02; done; echo setting up`, holdAfterSetup: true });
    expect(await runner.health()).toMatchObject({ agent: "running", stage: "setup" });
    writeFileSync(join(dir, "go"), "");
    await waitFor("ready");
    expect(agentRan()).toBe(false);
    await runner.continueAfterSetup();
    const exited = await waitFor("exited");
    expect(exited.exitCode).toBe(0);
    const { events } = await runner.events(0, 0);
    expect(events.filter((e) => e.kind === "log").map((e) => e.kind === "log" && `${e.stream}: ${e.text}`)).toEqual(["setup: setting up", "stdout: agent ran"]);
    await runner.shutdown();
    await done;
  });

  it("never starts the agent when cancelled while held", async () => {
    const { runner, done, waitFor, agentRan } = await startRunner();
    await runner.start({ setupScript: "echo setting up", holdAfterSetup: true });
    await waitFor("ready");
    await runner.cancel();
    expect((await runner.health()).agent).toBe("exited");
    await runner.continueAfterSetup(); // a late continue changes nothing
    const { events } = await runner.events(0, 0);
    expect(events.map((e) => (e.kind === "log" ? e.text : "exit"))).toEqual(["setting up"]);
    expect(agentRan()).toBe(false);
    await runner.shutdown();
    await done;
  });

  it("does not hold when setup fails", async () => {
    const { runner, done, waitFor, agentRan } = await startRunner();
    await runner.start({ setupScript: "exit 3", holdAfterSetup: true });
    expect((await waitFor("exited")).exitCode).toBe(3);
    expect(agentRan()).toBe(false);
    await runner.shutdown();
    await done;
  });
});
