import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TaskService } from "../src/gen/paddock/v1/task_pb.js";
import { TaskRunService } from "../src/gen/paddock/v1/task_run_pb.js";
import { bearer, dockerAvailable, freePort, gitEnv, makeGitRepo, processesOf, removeSnapshots, tempDir } from "./fixtures.js";

/**
 * Chaos: runs on both providers while the compiled daemon is SIGKILLed at different
 * phases and started again. Every run must reach cleaned, and nothing may be left of
 * them: no container, no worktree, no process (checked in the process table).
 */
const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "dist", "paddock");
const dockerUp = dockerAvailable();

describe.runIf(dockerUp)("chaos: SIGKILL the daemon at every phase", () => {
  let repo: string;
  let dataDir: string;
  let daemon: ChildProcess | undefined;

  beforeAll(() => {
    if (!existsSync(BIN)) execFileSync("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: "inherit" });
    execFileSync("bash", ["scripts/build-images.sh"], { cwd: ROOT, stdio: "inherit" });
    repo = makeGitRepo();
    dataDir = tempDir("chaos");
  }, 600_000);
  afterAll(() => {
    if (daemon && daemon.exitCode === null && !daemon.signalCode) daemon.kill("SIGKILL");
    rmSync(repo, { recursive: true, force: true });
    removeSnapshots(dataDir);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("every run reaches cleaned and leaves no container, worktree or process", async () => {
    const port = await freePort();
    const start = async () => {
      const child = spawn(BIN, ["serve", "--data-dir", dataDir, "--listen", `127.0.0.1:${port}`, "--log-format", "json", "--grace-time", "1s"], {
        env: gitEnv,
        stdio: ["ignore", "ignore", "pipe"],
      });
      let err = "";
      child.stderr!.on("data", (d: Buffer) => (err += d));
      for (let i = 0; i < 200 && !err.includes("paddock listening"); i++) await sleep(50);
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
    for (const provider of ["docker", "local", "docker", "local", "docker", "local"]) {
      ids.push((await runs.startRun({ taskId: task!.id, provider, agentCommand: agent })).run!.id);
    }

    // 1: while they provision.
    const atKill: string[][] = [await phases(ids)];
    await kill();
    daemon = await start();
    // 2: once some are running.
    for (let i = 0; i < 200 && !(await phases(ids)).includes("running"); i++) await sleep(50);
    atKill.push(await phases(ids));
    await kill();
    daemon = await start();
    // 3: once some have ended and are being cleaned up.
    for (let i = 0; i < 400; i++) {
      const ps = await phases(ids);
      if (ps.some((p) => ["completed", "failed", "cancelled", "cleaned"].includes(p))) break;
      await sleep(50);
    }
    atKill.push(await phases(ids));
    await kill();
    daemon = await start();

    for (let i = 0; i < 1200; i++) {
      if ((await phases(ids)).every((p) => p === "cleaned")) break;
      await sleep(100);
    }
    expect(await phases(ids)).toEqual(ids.map(() => "cleaned"));
    // The kills did land in the phases they were meant for.
    expect(atKill[0]!.every((p) => ["queued", "provisioning", "running"].includes(p))).toBe(true);
    expect(atKill[1]).toContain("running");
    expect(atKill[2]!.some((p) => ["completed", "failed", "cancelled", "cleaned"].includes(p))).toBe(true);
    for (const id of ids) {
      expect(execFileSync("docker", ["ps", "-aq", "--filter", `label=paddock.run=${id}`], { encoding: "utf8" }).trim(), `containers of ${id}`).toBe("");
    }
    expect(readdirSync(join(dataDir, "sandboxes")), "local sandboxes left").toEqual([]);
    expect(execFileSync("git", ["worktree", "list"], { cwd: repo, encoding: "utf8" }).trim().split("\n")).toHaveLength(1);
    // A moment for processes already killed to be reaped by the kernel.
    for (let i = 0; i < 40 && processesOf(ids).length > 0; i++) await sleep(50);
    expect(processesOf(ids).join("\n"), "processes of the runs").toBe("");

    daemon.kill("SIGTERM");
    await new Promise((r) => daemon!.once("exit", r));
  }, 300_000);
});
