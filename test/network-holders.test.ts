import { execFileSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { beforeAll, describe, expect } from "vitest";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import type { DockerProvider } from "../src/sandbox/docker/docker-provider.js";
import type { CleanupResult } from "../src/sandbox/provider.js";
import { createRunnerClient, type RunnerClient } from "../src/sandbox/runner-client.js";
import { allLogs, buildSandboxImage, cleanUp, type Daemon, dockerAvailable, instanceOf, removeEgress, removeSnapshots, sh, startDaemon, test, waitForPhase, watchToEnd } from "./fixtures.js";

/**
 * Network holders against a real engine and daemon: a sandbox that is not a warm pool's
 * joins a holder made ahead of it on its network instead of having its network set up as
 * it starts. Each holder serves one sandbox and goes with it; the agent shares only its
 * network namespace; a holder no sandbox joins is reaped; 0 turns them off.
 */
const IMAGE = process.env.PADDOCK_TEST_IMAGE || "paddock-sandbox:latest";
const dockerUp = dockerAvailable();

const docker = (...args: string[]) => execFileSync("docker", args, { encoding: "utf8" }).trim();
const exists = (name: string) => docker("ps", "-aq", "--filter", `name=^/${name}$`) !== "";

interface Inspected {
  Id: string;
  Name: string;
  State: { Running: boolean };
  HostConfig: { NetworkMode: string };
  NetworkSettings: { Networks: Record<string, { IPAddress: string }> };
}
const inspect = (name: string) => (JSON.parse(docker("inspect", name)) as Inspected[])[0]!;

/** This daemon instance's network holders (by name), however made. */
function holders(instance: string): string[] {
  return docker("ps", "-a", "--format", "{{.Names}}", "--filter", `label=paddock.instance=${instance}`, "--filter", "label=paddock.netns").split("\n").filter(Boolean).sort();
}

/** Waits until the daemon has made the holders it wants and `count` exist. */
async function holdersSettled(d: Daemon, instance: string, count: number): Promise<string[]> {
  await (d.app.providers.get("docker") as DockerProvider).holders.settled();
  for (let i = 0; i < 600 && holders(instance).length !== count; i++) await sleep(50);
  return holders(instance);
}

const systemOf = async (d: Daemon, runId: string) => (await allLogs(d, runId)).filter((l) => l.stream === "system").map((l) => l.text);
const stdoutOf = async (d: Daemon, runId: string) => (await allLogs(d, runId)).filter((l) => l.stream === "stdout").map((l) => l.text);

/** Waits for a stdout line of the run. */
async function untilPrinted(d: Daemon, runId: string, line: string): Promise<void> {
  for (let i = 0; i < 1200 && !(await stdoutOf(d, runId)).includes(line); i++) await sleep(50);
  expect(await stdoutOf(d, runId)).toContain(line);
}

/**
 * An agent that commits a file, says what it can see of the network namespace and of other
 * processes, then (gated) waits until the test opens its gate (a file it makes in the
 * sandbox). The holder's command is looked for by a pattern that does not match itself:
 * neither this script's command line nor grep's may pass for it.
 */
const gatedAgent = (gated: boolean) => [
  "sh",
  "-c",
  "echo held > held.txt; git add held.txt; git -c user.name=a -c user.email=a@x commit -qm held; " +
    'echo "routes: $(tail -n +2 /proc/net/route | wc -l)"; ' +
    "if cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -q 'sleep infinit[y]'; then echo 'holder process: seen'; else echo 'holder process: not seen'; fi; " +
    (gated ? "echo waiting; until [ -e /tmp/gate ]; do sleep 0.1; done; " : "") +
    "echo done",
];
const openGate = (runId: string) => docker("exec", `paddock-${runId}-1`, "touch", "/tmp/gate");

describe.runIf(dockerUp)("docker network holders", () => {
  beforeAll(buildSandboxImage, 600_000);

  test("a sandbox joins a holder made ahead on its network; the holder serves it alone, shares only its network, and goes with it", async ({ repo }) => {
    const d = await startDaemon({ config: { dockerImage: IMAGE } });
    const instance = instanceOf(d.dataDir);
    try {
      const { task } = await d.tasks.createTask({ title: "held", repository: repo });

      // The first run of the daemon has no holder yet: its network is made as it starts, and
      // the daemon learns the network.
      const first = (await d.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["true"] })).run!;
      expect((await watchToEnd(d, first.id, 180_000)).pop()!.status).toBe(RunStatus.COMPLETED);
      expect((await systemOf(d, first.id)).some((l) => l.startsWith("its network: network holder"))).toBe(false);
      const [holder] = await holdersSettled(d, instance, 1);
      expect(holder).toMatch(/^paddock-net-[0-9a-f]{12}$/);
      const held = inspect(holder!);
      expect(held.State.Running).toBe(true);
      expect(Object.keys(held.NetworkSettings.Networks)).toEqual([`paddock-open-${instance}`]);

      // The next one joins it.
      const run = (await d.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: gatedAgent(true) })).run!;
      await waitForPhase(d, run.id, "running", 120_000);
      await untilPrinted(d, run.id, "waiting");
      expect(await systemOf(d, run.id)).toContain(`its network: network holder ${holder}'s, set up before the run`);
      const sandbox = inspect(`paddock-${run.id}-1`);
      expect(sandbox.HostConfig.NetworkMode).toBe(`container:${held.Id}`);
      const out = await stdoutOf(d, run.id);
      // It has the holder's network (a route out), not the holder's processes.
      expect(out.find((l) => l.startsWith("routes: "))).not.toBe("routes: 0");
      expect(out).toContain("holder process: not seen");
      // The holder serves this sandbox alone: the next one is another container.
      const [next] = await holdersSettled(d, instance, 2).then((all) => all.filter((n) => n !== holder));
      expect(next).toMatch(/^paddock-net-/);

      // A cancel keeps the work, and the sandbox and its holder go.
      await d.runs.cancelRun({ runId: run.id });
      const final = (await watchToEnd(d, run.id, 180_000)).pop()!;
      expect(final).toMatchObject({ status: RunStatus.CANCELLED, phase: "cleaned" });
      expect(sh(repo, "git", "show", `paddock/${run.id}:held.txt`)).toBe("held");
      expect(exists(`paddock-${run.id}-1`)).toBe(false);
      expect(exists(holder!)).toBe(false);

      // A run to its end in the next holder: completed, its work on its branch, both gone.
      const done = (await d.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: gatedAgent(false) })).run!;
      const ended = (await watchToEnd(d, done.id, 180_000)).pop()!;
      expect(ended).toMatchObject({ status: RunStatus.COMPLETED, exitCode: 0 });
      expect(await systemOf(d, done.id)).toContain(`its network: network holder ${next}'s, set up before the run`);
      expect(await stdoutOf(d, done.id)).toContain("done");
      expect(sh(repo, "git", "show", `paddock/${done.id}:held.txt`)).toBe("held");
      expect(exists(next!)).toBe(false);
    } finally {
      await cleanUp(d);
    }
    // The daemon's stop removed its ready holder.
    expect(holders(instance)).toEqual([]);
  }, 600_000);

  test("a restarted daemon keeps the holder of a live run's sandbox and reaps one that nothing joins", async ({ repo }) => {
    let d = await startDaemon({ config: { dockerImage: IMAGE } });
    const dataDir = d.dataDir;
    const instance = instanceOf(dataDir);
    try {
      const { task } = await d.tasks.createTask({ title: "held over a restart", repository: repo });
      const first = (await d.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["true"] })).run!;
      expect((await watchToEnd(d, first.id, 180_000)).pop()!.status).toBe(RunStatus.COMPLETED);
      const [holder] = await holdersSettled(d, instance, 1);
      const run = (await d.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: gatedAgent(true) })).run!;
      await untilPrinted(d, run.id, "waiting");
      expect(inspect(`paddock-${run.id}-1`).HostConfig.NetworkMode).toBe(`container:${inspect(holder!).Id}`);
      await holdersSettled(d, instance, 2);
      await d.app.stop(); // its ready holder goes; the run's sandbox and holder stay

      // What a crash between taking a holder and making its sandbox leaves: a holder of this
      // instance that no container joins.
      const orphan = `paddock-net-0rphan${Date.now() % 100000}`;
      docker("run", "-d", "--name", orphan, "--label", `paddock.instance=${instance}`, "--label", "paddock.netns=default", "--entrypoint", "sleep", IMAGE, "infinity");

      d = await startDaemon({ dataDir, config: { dockerImage: IMAGE } });
      for (let i = 0; i < 1200 && exists(orphan); i++) await sleep(50);
      expect(exists(orphan)).toBe(false);
      expect(exists(holder!)).toBe(true);
      expect((await d.runs.getRun({ runId: run.id })).run!.phase).toBe("running");
      openGate(run.id);
      const final = (await watchToEnd(d, run.id, 180_000)).pop()!;
      expect(final).toMatchObject({ status: RunStatus.COMPLETED, exitCode: 0 });
      expect(sh(repo, "git", "show", `paddock/${run.id}:held.txt`)).toBe("held");
      expect(exists(holder!)).toBe(false);
    } finally {
      const left = () => docker("ps", "-aq", "--filter", `label=paddock.instance=${instance}`).split("\n").filter(Boolean);
      await cleanUp(d).catch(() => undefined); // a daemon stopped already by a failure above
      if (left().length > 0) docker("rm", "-f", "-v", ...left());
      if (existsSync(join(dataDir, "paddock.db"))) {
        await removeEgress(dataDir);
        removeSnapshots(dataDir);
      }
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 600_000);

  test("work staged before a crash, the holder removed beside its sandbox and the sandbox not yet: the next cleanup imports the staged work", async ({ repo }) => {
    const first = await startDaemon({ config: { dockerImage: IMAGE } });
    let d = first;
    try {
      const instance = instanceOf(d.dataDir);
      const { task } = await d.tasks.createTask({ title: "crash between removals", repository: repo });
      const warm = (await d.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["true"] })).run!;
      expect((await watchToEnd(d, warm.id, 180_000)).pop()!.status).toBe(RunStatus.COMPLETED);
      const [holder] = await holdersSettled(d, instance, 1);
      const run = (await d.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: gatedAgent(true) })).run!;
      const name = `paddock-${run.id}-1`;
      await untilPrinted(d, run.id, "waiting");
      expect(inspect(name).HostConfig.NetworkMode).toBe(`container:${inspect(holder!).Id}`);
      const provider = d.app.providers.get("docker") as DockerProvider;
      const internals = provider as unknown as {
        opts: { tokenFor: (runId: string) => Promise<string> };
        stageWork(name: string, runner: RunnerClient, o: { source: string; resultBranch: string; signal: AbortSignal; timeout: AbortSignal }): Promise<CleanupResult | null>;
      };
      const token = await internals.opts.tokenFor(run.id);
      await d.app.stop();
      // What a cleanup did up to its crash: the work out and staged, then the holder removed
      // (beside the container, whose removal had not finished).
      const endpoint = (await provider.inspect(name)).endpoint!;
      const signal = AbortSignal.timeout(60_000);
      expect(await internals.stageWork(name, createRunnerClient(endpoint, token), { source: repo, resultBranch: run.resultBranch, signal, timeout: signal })).toBeNull();
      docker("rm", "-f", "-v", holder!);
      expect(inspect(name).State.Running).toBe(true);

      d = await first.restart();
      const final = (await watchToEnd(d, run.id, 180_000)).pop()!;
      expect(final.phase).toBe("cleaned");
      expect(final.resultCommit).toMatch(/^[0-9a-f]{40}$/);
      expect(sh(repo, "git", "show", `${final.resultCommit}:held.txt`)).toBe("held");
      expect(exists(name)).toBe(false);
      expect(existsSync(join(first.dataDir, "cleanup", name))).toBe(false);
    } finally {
      await cleanUp(d);
    }
  }, 600_000);

  test("--warm-networks 0: no holder is made, and sandboxes get their network as they start", async ({ repo }) => {
    const d = await startDaemon({ config: { dockerImage: IMAGE, warmNetworks: 0 } });
    try {
      const instance = instanceOf(d.dataDir);
      const { task } = await d.tasks.createTask({ title: "unheld", repository: repo });
      for (let i = 0; i < 2; i++) {
        const run = (await d.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["true"] })).run!;
        expect((await watchToEnd(d, run.id, 180_000)).pop()!.status).toBe(RunStatus.COMPLETED);
        expect((await systemOf(d, run.id)).some((l) => l.startsWith("its network: network holder"))).toBe(false);
      }
      await (d.app.providers.get("docker") as DockerProvider).holders.settled();
      expect(holders(instance)).toEqual([]);
    } finally {
      await cleanUp(d);
    }
  }, 600_000);
});
