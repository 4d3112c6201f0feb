import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskService } from "../src/gen/paddock/v1/task_pb.js";
import { TaskRunService } from "../src/gen/paddock/v1/task_run_pb.js";
import { startFakeModal, type FakeModal } from "./fake-modal.js";
import { bearer, dockerAvailable, freePort, gitEnv, instanceOf, makeGitRepo, processesOf, removeEgress, removeLocalWork, removeSnapshots, tempDir } from "./fixtures.js";

/**
 * Chaos: runs on docker, local and modal (against the local fake control plane) while the compiled daemon is SIGKILLed three times, as
 * they provision, run and end, and started again. What is asserted is the outcome, never
 * the phase a kill happened to land in (a busy machine moves them): every run reaches
 * cleaned, every line it recorded is stored exactly once and in order, and nothing is left
 * of it: no container, no workspace, no process (checked in the process table), no sandbox
 * in the fake Modal.
 */
const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "dist", "paddock");
const dockerUp = dockerAvailable();

describe.runIf(dockerUp)("chaos: SIGKILL the daemon at every phase", () => {
  let repo: string;
  let dataDir: string;
  let daemon: ChildProcess | undefined;
  let fake: FakeModal;

  beforeAll(async () => {
    if (!existsSync(BIN)) execFileSync("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: "inherit" });
    // PADDOCK_TEST_IMAGE: a sandbox image built under another tag, not rebuilt here.
    if (!process.env.PADDOCK_TEST_IMAGE) execFileSync("bash", ["scripts/build-images.sh"], { cwd: ROOT, stdio: "inherit" });
    repo = makeGitRepo();
    dataDir = tempDir("chaos");
    fake = await startFakeModal({ paddockBinary: BIN });
  }, 600_000);
  afterAll(async () => {
    await fake.close();
    if (daemon && daemon.exitCode === null && !daemon.signalCode) daemon.kill("SIGKILL");
    await removeEgress(dataDir); // the unrestricted docker runs' network and firewall chains
    rmSync(repo, { recursive: true, force: true });
    removeSnapshots(dataDir);
    removeLocalWork(dataDir);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("every run reaches cleaned and leaves no container, worktree or process", async () => {
    const port = await freePort();
    const start = async () => {
      const child = spawn(BIN, ["serve", "--data-dir", dataDir, "--listen", `127.0.0.1:${port}`, "--log-format", "json", "--grace-time", "1s"], {
        env: {
          ...gitEnv,
          ...(process.env.PADDOCK_TEST_IMAGE ? { PADDOCK_DOCKER_IMAGE: process.env.PADDOCK_TEST_IMAGE } : {}),
          MODAL_CONFIG_PATH: "/nonexistent/.modal.toml",
          PADDOCK_MODAL_IMAGE: "registry.test/paddock-sandbox:chaos",
          PADDOCK_MODAL_SERVER_URL: fake.url,
          PADDOCK_MODAL_TUNNEL_CA: fake.caFile,
          PADDOCK_MODAL_TOKEN_ID: "ak-chaos",
          PADDOCK_MODAL_TOKEN_SECRET: "as-chaos",
        },
        stdio: ["ignore", "ignore", "pipe"],
      });
      let err = "";
      child.stderr!.on("data", (d: Buffer) => (err += d));
      for (let i = 0; i < 1200 && !err.includes("paddock listening"); i++) await sleep(50);
      if (!err.includes("paddock listening")) throw new Error(`daemon did not start: ${err}`);
      return child;
    };
    const kill = async () => {
      daemon!.kill("SIGKILL");
      await new Promise((r) => (daemon!.exitCode !== null || daemon!.signalCode ? r(null) : daemon!.once("exit", r)));
    };
    daemon = await start();
    const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
    const transport = createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1", interceptors: [bearer(token)] });
    const tasks = createClient(TaskService, transport);
    const runs = createClient(TaskRunService, transport);
    const phases = async (ids: string[]) => Promise.all(ids.map(async (id) => (await runs.getRun({ runId: id })).run!.phase));

    const { task } = await tasks.createTask({ title: "chaos", repository: repo });
    const agent = ["sh", "-c", "i=0; while [ $i -lt 30 ]; do echo tick-$i; i=$((i+1)); sleep 0.1; done"];
    const ids: string[] = [];
    for (const provider of ["docker", "local", "modal", "docker", "local", "modal", "docker", "local", "modal"]) {
      ids.push((await runs.startRun({ taskId: task!.id, provider, agentCommand: agent })).run!.id);
    }

    // Kill 1 right away (they queue or provision); kill 2 once one runs, or after a while;
    // kill 3 once one has ended, or after a while. Whatever phase each was in is fine.
    await kill();
    daemon = await start();
    for (let i = 0; i < 600 && !(await phases(ids)).includes("running"); i++) await sleep(50);
    await kill();
    daemon = await start();
    const ended = ["completed", "failed", "cancelled", "cleaned"];
    for (let i = 0; i < 600 && !(await phases(ids)).some((p) => ended.includes(p)); i++) await sleep(50);
    await kill();
    daemon = await start();

    for (let i = 0; i < 3000; i++) {
      if ((await phases(ids)).every((p) => p === "cleaned")) break;
      await sleep(100);
    }
    expect(await phases(ids)).toEqual(ids.map(() => "cleaned"));
    for (const id of ids) {
      const ticks: string[] = [];
      for await (const res of runs.streamLogs({ runId: id, follow: false })) ticks.push(...res.entries.filter((l) => l.stream === "stdout").map((l) => l.text));
      // Once each, in order; all of them when the agent ran to its end.
      expect(ticks, `lines of ${id}`).toEqual(ticks.map((_, i) => `tick-${i}`));
      const { run } = await runs.getRun({ runId: id });
      if (run!.exitCode === 0) expect(ticks).toHaveLength(30);
    }
    for (const id of ids) {
      expect(execFileSync("docker", ["ps", "-aq", "--filter", `label=paddock.run=${id}`], { encoding: "utf8" }).trim(), `containers of ${id}`).toBe("");
    }
    expect(readdirSync(join(dataDir, "sandboxes")), "local sandboxes left").toEqual([]);
    for (let i = 0; i < 600 && fake.running().length > 0; i++) await sleep(50); // terminated ones exit within their grace (longer on a busy machine)
    expect(fake.running().map((s) => s.name), "sandboxes left in the fake Modal").toEqual([]);
    expect(fake.unimplemented, "RPCs the fake Modal does not implement").toEqual([]);
    expect(execFileSync("git", ["worktree", "list"], { cwd: repo, encoding: "utf8" }).trim().split("\n")).toHaveLength(1);
    const work = join("/var/lib/paddock-work", instanceOf(dataDir));
    expect(existsSync(work) ? readdirSync(work) : [], "local workspaces left").toEqual([]);
    // A moment for processes already killed to be reaped by the kernel.
    for (let i = 0; i < 200 && processesOf(ids).length > 0; i++) await sleep(50);
    expect(processesOf(ids).join("\n"), "processes of the runs").toBe("");

    daemon.kill("SIGTERM");
    await new Promise((r) => daemon!.once("exit", r));
  }, 600_000);
});
