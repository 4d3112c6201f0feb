import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { beforeAll, describe, expect } from "vitest";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import type { DockerProvider } from "../src/sandbox/docker/docker-provider.js";
import { allLogs, bearer, buildSandboxImage, cleanUp, compiledClients, type Daemon, dockerAvailable, freePort, gitEnv, instanceOf, killHard, makeGitRepo, removeEgress, removeSnapshots, serveCompiled, sh, startDaemon, tempDir, test, waitForPhase, watchToEnd } from "./fixtures.js";

/**
 * The docker provider's warm pool against a real engine, daemon and gRPC clients: a hit
 * runs a task end to end in a claimed member, the pool refills, a member is only ever
 * used for its own key, a miss starts as before, nothing of a run is in a member before
 * its claim, and a SIGKILLed daemon's claimed member is still cleaned (its unclaimed ones
 * reaped) after a restart. PADDOCK_TEST_IMAGE names an image of this checkout's runner.
 */
const ROOT = resolve(import.meta.dirname, "..");
const BIN = resolve(ROOT, "dist/paddock");
const IMAGE = process.env.PADDOCK_TEST_IMAGE || "paddock-sandbox:latest";
const dockerUp = dockerAvailable();

const docker = (...args: string[]) => execFileSync("docker", args, { encoding: "utf8" }).trim();

/** This daemon's unclaimed pool members (by name), and all its pool-born containers. */
function members(instance: string): string[] {
  return docker("ps", "-a", "--format", "{{.Names}}", "--filter", `label=paddock.instance=${instance}`, "--filter", "label=paddock.pool")
    .split("\n")
    .filter((n) => n.startsWith("paddock-pool-"))
    .sort();
}
const exists = (name: string) => docker("ps", "-aq", "--filter", `name=^/${name}$`) !== "";

function poolOf(d: Daemon) {
  return (d.app.providers.get("docker") as DockerProvider).pool!;
}

/** Waits until the pool has made what it wants for every key it knows (no sleeps beyond a poll). */
async function poolSettled(d: Daemon, instance: string, count: number): Promise<string[]> {
  await poolOf(d).settled();
  for (let i = 0; i < 600 && members(instance).length !== count; i++) await sleep(50);
  return members(instance);
}

/** Two runs of the task, both misses: the first snapshots the key, the second fills the pool from the snapshot. Returns the second. */
async function warm(d: Daemon, taskId: string, agentCommand: string[]) {
  let last;
  for (let i = 0; i < 2; i++) {
    last = (await d.runs.startRun({ taskId, provider: "docker", agentCommand })).run!;
    expect((await watchToEnd(d, last.id, 180_000)).pop()!.status).toBe(RunStatus.COMPLETED);
    expect(await systemOf(d, last.id)).toContain("warm pool: no ready sandbox for this key");
  }
  return last!;
}

const systemOf = async (d: Daemon, runId: string) => (await allLogs(d, runId)).filter((l) => l.stream === "system").map((l) => l.text);

describe.runIf(dockerUp)("the docker warm pool", () => {
  beforeAll(buildSandboxImage, 600_000);

  test("a miss starts as before and fills the pool; a hit runs the task end to end in the claimed member, which held nothing of the run before", async ({ repo }) => {
    const d = await startDaemon({ config: { warmPool: 1, dockerImage: IMAGE } });
    try {
      const instance = instanceOf(d.dataDir);
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(d.adminToken)] }));
      const env = (
        await envs.createEnvironment({
          environment: { name: "pooled", networkAccess: NetworkAccess.FULL, envVars: { POOL_PROBE_VAR: "var-value-5f1c" } },
          secrets: [{ name: "POOL_PROBE_SECRET", value: "secret-value-8a2e" }],
        })
      ).environment!;
      const { task } = await d.tasks.createTask({ title: "pooled task", repository: repo, environmentId: env.id });
      const agent = ["sh", "-c", 'read -r p; echo "task: $p; var: $POOL_PROBE_VAR; secret set: ${POOL_PROBE_SECRET:+yes}"; echo made > made.txt; git add made.txt; git -c user.name=a -c user.email=a@x commit -qm made'];

      // The first run of the key misses and is made as today (and snapshots the key); the
      // second misses too, as the key's image is its snapshot now and the member made from
      // the base image is retired.
      await warm(d, task!.id, agent);

      // The pool learnt the key and made one member: nothing of any run is in it.
      const [member] = await poolSettled(d, instance, 1);
      expect(member).toBeDefined();
      const inspect = docker("inspect", member!);
      for (const s of ["var-value-5f1c", "secret-value-8a2e", "POOL_PROBE", "BEGIN PUBLIC KEY", "pooled task", "run_"]) expect(inspect).not.toContain(s);
      const memberEnv = (JSON.parse(inspect) as { Config: { Env: string[] } }[])[0]!.Config.Env;
      for (const name of ["PADDOCK_RUN_ID", "PADDOCK_PROMPT", "PADDOCK_AGENT_COMMAND", "PADDOCK_RESULT_BRANCH", "JWT_PUBLIC_KEY"]) expect(memberEnv).toContain(`${name}=`);
      expect(memberEnv.find((e) => e.startsWith("PADDOCK_POOL_CLAIM="))).toMatch(/^PADDOCK_POOL_CLAIM=[0-9a-f]{64}$/);

      // A hit: the member becomes the run's sandbox, under the run's name.
      const second = (await d.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: agent })).run!;
      await waitForPhase(d, second.id, "running", 120_000);
      expect(exists(member!)).toBe(false);
      const final = (await watchToEnd(d, second.id, 180_000)).pop()!;
      expect(final).toMatchObject({ status: RunStatus.COMPLETED, exitCode: 0, phase: "cleaned" });
      const system = await systemOf(d, second.id);
      expect(system.find((l) => l.startsWith("took the warm sandbox"))).toMatch(new RegExp(`^took the warm sandbox ${member} as paddock-${second.id}-1 \\(from snapshot paddock-snapshot:`));
      const stdout = (await allLogs(d, second.id)).filter((l) => l.stream === "stdout").map((l) => l.text);
      expect(stdout).toEqual(["task: pooled task; var: var-value-5f1c; secret set: yes"]);
      expect(final.resultBranch).toBe(`paddock/${second.id}`);
      expect(sh(repo, "git", "rev-parse", final.resultBranch)).toBe(final.resultCommit);
      expect(sh(repo, "git", "show", `${final.resultBranch}:made.txt`)).toBe("made");
      expect(exists(`paddock-${second.id}-1`)).toBe(false);

      // Refilled in the background: one new member, another name.
      const refilled = await poolSettled(d, instance, 1);
      expect(refilled).toHaveLength(1);
      expect(refilled[0]).not.toBe(member);
    } finally {
      await cleanUp(d);
    }
    // The daemon's stop removed its members.
  });

  test("a member is used only for its own key: other limits or another repository miss it", async ({ repo }) => {
    const d = await startDaemon({ config: { warmPool: 1, dockerImage: IMAGE } });
    const other = makeGitRepo();
    try {
      const instance = instanceOf(d.dataDir);
      const { task } = await d.tasks.createTask({ title: "keyed", repository: repo });
      await warm(d, task!.id, ["true"]);
      const [member] = await poolSettled(d, instance, 1);
      // Other limits: another key.
      const limited = (await d.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["true"], limits: { cpus: 0.5 } })).run!;
      expect((await watchToEnd(d, limited.id, 180_000)).pop()!.status).toBe(RunStatus.COMPLETED);
      expect(await systemOf(d, limited.id)).toContain("warm pool: no ready sandbox for this key");
      // Another repository: another key (its first run snapshots it, and the pool learns both).
      const { task: otherTask } = await d.tasks.createTask({ title: "other", repository: other });
      const elsewhere = (await d.runs.startRun({ taskId: otherTask!.id, provider: "docker", agentCommand: ["true"] })).run!;
      expect((await watchToEnd(d, elsewhere.id, 180_000)).pop()!.status).toBe(RunStatus.COMPLETED);
      expect(await systemOf(d, elsewhere.id)).toContain("warm pool: no ready sandbox for this key");
      expect(exists(member!)).toBe(true);
      // Each key learnt has its member now; the first is still the one made for it.
      expect(await poolSettled(d, instance, 3)).toContain(member);
      expect(poolOf(d).size).toBe(1);
    } finally {
      await cleanUp(d);
      rmSync(other, { recursive: true, force: true });
    }
  });

  test("after a SIGKILL mid-run the restarted daemon cleans the claimed member as the run's, and reaps the dead process's unclaimed ones", async ({ repo }) => {
    const dataDir = tempDir("pool-chaos");
    const port = await freePort();
    let daemon: ChildProcess | undefined;
    let daemonLog = "";
    const start = () =>
      serveCompiled(BIN, { dataDir, port, env: { ...gitEnv, PATH: process.env.PATH }, args: ["--warm-pool", "1", "--docker-image", IMAGE], log: (b) => (daemonLog += b) });
    try {
      daemon = await start();
      const instance = instanceOf(dataDir);
      const { tasks, runs } = compiledClients(dataDir, port);
      const phaseOf = async (id: string) => (await runs.getRun({ runId: id })).run!;
      const waitFor = async (id: string, ok: (phase: string) => boolean) => {
        for (let i = 0; i < 2400 && !ok((await phaseOf(id)).phase); i++) await sleep(50);
        return phaseOf(id);
      };
      const { task } = await tasks.createTask({ title: "chaos", repository: repo });
      // Two runs warm the key (the first snapshots it, the second fills the pool from the snapshot).
      for (let i = 0; i < 2; i++) {
        const warmer = (await runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["true"] })).run!;
        expect((await waitFor(warmer.id, (p) => p === "cleaned")).status).toBe(RunStatus.COMPLETED);
      }
      for (let i = 0; i < 1200 && members(instance).length < 1; i++) await sleep(50);
      const [claimed] = members(instance);
      for (let i = 0; i < 1200 && !daemonLog.includes(`warm pool: ${claimed} ready`); i++) await sleep(50);
      const agent = ["sh", "-c", "echo tick; echo work > work.txt; git add work.txt; git -c user.name=a -c user.email=a@x commit -qm work; exec sleep 300"];
      let run = (await runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: agent })).run!;
      run = await waitFor(run.id, (p) => p === "running");
      expect(run.phase).toBe("running");
      const logs: string[] = [];
      for await (const res of runs.streamLogs({ runId: run.id, follow: false })) logs.push(...res.entries.map((l) => l.text));
      expect(logs.find((l) => l.startsWith("took the warm sandbox"))).toMatch(new RegExp(`^took the warm sandbox ${claimed} as paddock-${run.id}-1 `));
      // The refill made another unclaimed member by now (or soon): the SIGKILL leaves it behind.
      for (let i = 0; i < 1200 && members(instance).length < 1; i++) await sleep(50);
      const orphans = members(instance);
      expect(orphans).toHaveLength(1);

      await killHard(daemon);
      daemon = await start();
      // The orphan is reaped; the claimed member is the run's and goes on.
      for (let i = 0; i < 1200 && orphans.some(exists); i++) await sleep(50);
      expect(orphans.filter(exists)).toEqual([]);
      expect(exists(`paddock-${run.id}-1`)).toBe(true);
      expect((await phaseOf(run.id)).phase).toBe("running");
      await runs.cancelRun({ runId: run.id });
      const final = await waitFor(run.id, (p) => p === "cleaned");
      expect(final).toMatchObject({ status: RunStatus.CANCELLED, phase: "cleaned" });
      // The work came out of the claimed member onto the run's branch.
      expect(sh(repo, "git", "show", `paddock/${run.id}:work.txt`)).toBe("work");
      expect(exists(`paddock-${run.id}-1`)).toBe(false);
      daemon.kill("SIGTERM");
      await new Promise((r) => (daemon!.exitCode !== null || daemon!.signalCode ? r(null) : daemon!.once("exit", r)));
      // A daemon's stop removes its members.
      expect(members(instance)).toEqual([]);
    } finally {
      if (daemon && daemon.exitCode === null && !daemon.signalCode) daemon.kill("SIGKILL");
      if (existsSync(join(dataDir, "paddock.db"))) {
        const instance = instanceOf(dataDir);
        const left = docker("ps", "-aq", "--filter", `label=paddock.instance=${instance}`).split("\n").filter(Boolean);
        if (left.length > 0) docker("rm", "-f", "-v", ...left);
        await removeEgress(dataDir);
        removeSnapshots(dataDir);
      }
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 600_000);
});
