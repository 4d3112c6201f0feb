import { execFileSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { makeGitRepo, tempDir } from "../../test/fixtures.js";
import { issueSandboxToken, loadOrCreateSandboxKeys } from "../auth/sandbox-token.js";
import { createRunnerClient } from "../sandbox/runner-client.js";
import { runRunner } from "./runner.js";
import { readRunnerEnvironment } from "./runner-env.js";
import { RUNNER_INFO_FILE } from "./runner-protocol.js";

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A real runner in import mode (PADDOCK_IMPORT=1), as the modal provider starts it. */
async function importRunner(branch = "") {
  const dir = tempDir("import");
  dirs.push(dir);
  const keys = await loadOrCreateSandboxKeys(dir);
  const runId = "run_import1";
  const settings = readRunnerEnvironment({
    PADDOCK_RUN_ID: runId,
    PADDOCK_RUNNER_HOST: "127.0.0.1",
    PADDOCK_RUNNER_PORT: "0",
    PADDOCK_WORKDIR: join(dir, "workspace"),
    PADDOCK_STATE_DIR: join(dir, "state"),
    PADDOCK_IMPORT: "1",
    PADDOCK_BRANCH: branch,
    PADDOCK_RESULT_BRANCH: `paddock/${runId}`,
    PADDOCK_AGENT_COMMAND: JSON.stringify(["sh", "-c", "cat README.md"]),
    PADDOCK_AGENT_HOME: join(dir, "home"),
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
  const repo = makeGitRepo();
  dirs.push(repo);
  const bundle = join(dir, "in.bundle");
  execFileSync("git", ["bundle", "create", "--quiet", bundle, "HEAD", "--branches"], { cwd: repo });
  return { runner, done, dir, bundle };
}

describe("the runner's POST /import", () => {
  it("refuses /start before the repository is imported; the import checks it out on the result branch; a second import is a no-op", async () => {
    const { runner, done, dir, bundle } = await importRunner();
    await expect(runner.start({})).rejects.toThrow(/HTTP 409: the repository has not been imported yet/);
    await runner.importSource(bundle);
    expect(execFileSync("git", ["rev-parse", "--abbrev-ref", "HEAD"], { cwd: join(dir, "workspace"), encoding: "utf8" }).trim()).toBe("paddock/run_import1");
    await runner.importSource(bundle); // after a daemon restart: nothing happens twice
    await runner.start({});
    for (;;) {
      const { events } = await runner.events(0, 1000);
      if (events.some((e) => e.kind === "exit")) {
        expect(events.filter((e) => e.kind === "log").map((e) => (e as { text: string }).text)).toContain("hello");
        break;
      }
    }
    await runner.shutdown();
    await done;
  });

  it("a branch the bundle lacks fails the import with git's reason, not retryably", async () => {
    const { runner, done, bundle } = await importRunner("no-such-branch");
    const error = await runner.importSource(bundle).catch((e: unknown) => e as { message: string; retryable: boolean });
    expect(error).toMatchObject({ retryable: false });
    expect(error!.message).toMatch(/checkout failed: branch "no-such-branch" not found/);
    await runner.shutdown();
    await done;
  });
});
