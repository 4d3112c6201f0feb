import { execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { describe, expect, test } from "vitest";
import { RUN_VARIABLES } from "../src/agent/runner-env.js";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import type { ModalProvider } from "../src/sandbox/modal/modal-provider.js";
import { allLogs, bearer, cleanUp, compiledClients, freePort, gitEnv, instanceOf, killHard, makeGitRepo, serveCompiled, sh, startDaemon, tempDir, watchToEnd } from "./fixtures.js";
import { type FakeModal, type FakeSandbox, modalEnv } from "./fake-modal.js";
import { useFakeModal } from "./fake-modal-hooks.js";

/**
 * The modal provider's warm pool against the local fake of Modal (test/fake-modal.ts), with
 * a real daemon, the real SDK and this worktree's dist/paddock as every sandbox's runner.
 */
const ROOT = resolve(import.meta.dirname, "..");
let fake: FakeModal;
useFakeModal((f) => (fake = f));

/** Waits (on a condition, never a fixed time) until `get` gives what `ok` accepts. */
async function until<T>(get: () => T, ok: (v: T) => boolean, what: string, ms = 120_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = get();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Pool members of the instance that no run has claimed, still running. */
const waiting = (instance: string): FakeSandbox[] => fake.running().filter((s) => s.tags["paddock.instance"] === instance && s.tags["paddock.member"] && s.tags["paddock.run"] === "");

const COMMIT = ["sh", "-c", 'read -r p; echo "got: $p"; echo made > made.txt; git add made.txt; git -c user.name=a -c user.email=a@x commit -qm made; echo left > uncommitted.txt'];
const OTHER = ["sh", "-c", "echo other > other.txt; git add other.txt; git -c user.name=a -c user.email=a@x commit -qm other; echo secret-of-another-run > stray.txt"];

describe("the modal provider's warm pool", () => {
  test("a hit: the run claims a member made ahead that held nothing of any run, runs on its branch, and its work comes back", async () => {
    const d = await startDaemon({ config: { modalImage: "registry.test/paddock-sandbox:test", modalTokenId: "ak-test", modalTokenSecret: "as-test", modalServerUrl: fake.url, modalTunnelCa: fake.caFile, warmPool: "1" } });
    const repo = makeGitRepo();
    sh(repo, "git", "checkout", "-q", "feature");
    sh(repo, "sh", "-c", "echo feature > feature.txt && git add feature.txt && git -c user.name=a -c user.email=a@x commit -qm feature && git checkout -q -");
    const instance = instanceOf(d.dataDir);
    try {
      const { task } = await d.tasks.createTask({ title: "pool", description: "commit a file", repository: repo });
      const provider = d.app.providers.get("modal") as ModalProvider;
      // The first run teaches the pool its key and leaves a snapshot; the second starts from
      // the snapshot (a member of the base image is of an older recipe) and refills from it.
      for (const _ of [1, 2]) {
        const { run } = await d.runs.startRun({ taskId: task!.id, provider: "modal", agentCommand: OTHER });
        expect((await watchToEnd(d, run!.id, 120_000)).pop()).toMatchObject({ status: RunStatus.COMPLETED, phase: "cleaned" });
        expect((await allLogs(d, run!.id)).map((l) => l.text).join("\n")).toMatch(/warm pool: no ready modal sandbox/);
      }
      await provider.pool.settled();
      const [member] = await until(() => waiting(instance), (m) => m.length === 1, "one ready member");
      // Before the claim it holds nothing of any run: blank run tags, no run variable, no claim, nothing naming a run.
      expect(member!.tags).toMatchObject({ "paddock.run": "", "paddock.sandbox": "" });
      expect(member!.tags["paddock.pool"]).toMatch(/^[0-9a-f]{24}$/);
      expect(member!.name).toMatch(/^paddock-pool-/);
      for (const k of RUN_VARIABLES) expect(member!.env[k] ?? "", k).toBe("");
      expect(member!.env.PADDOCK_POOL_CLAIM).toMatch(/^[0-9a-f]{64}$/);
      const stateDir = join(member!.dir, "paddock", "state", member!.name);
      expect(existsSync(join(stateDir, "claim.json"))).toBe(false);
      const made = fake.sandboxes.size;

      const { run } = await d.runs.startRun({ taskId: task!.id, provider: "modal", agentCommand: COMMIT, branch: "feature" });
      const final = (await watchToEnd(d, run!.id, 120_000)).pop()!;
      const text = (await allLogs(d, run!.id)).map((l) => l.text).join("\n");
      expect(final, text).toMatchObject({ status: RunStatus.COMPLETED, phase: "cleaned" });
      expect(text).toMatch(new RegExp(`took the warm modal sandbox ${member!.name} \\(${member!.id}\\) as paddock-${run!.id}-1`));
      expect(text).toMatch(/got: pool/);
      // The run's sandbox is the member, retagged as the run's; no sandbox was made for it.
      expect(member!.tags).toMatchObject({ "paddock.run": run!.id, "paddock.sandbox": `paddock-${run!.id}-1`, "paddock.member": member!.name });
      expect(fake.sandboxes.size - made).toBeLessThanOrEqual(1); // at most the refill
      expect([...fake.sandboxes.values()].filter((s) => s.tags["paddock.run"] === run!.id)).toEqual([member]);
      expect(member!.terminated).toBe(true);
      // Its work came back onto paddock/<run>, from the run's branch, with nothing of the other runs.
      expect(final.resultBranch).toBe(`paddock/${run!.id}`);
      expect(sh(repo, "git", "show", `${final.resultBranch}:made.txt`)).toBe("made");
      expect(sh(repo, "git", "show", `${final.resultBranch}:uncommitted.txt`)).toBe("left");
      expect(sh(repo, "git", "show", `${final.resultBranch}:feature.txt`)).toBe("feature");
      expect(sh(repo, "git", "ls-tree", "-r", "--name-only", final.resultBranch).split("\n").sort()).toEqual(["README.md", "feature.txt", "made.txt", "uncommitted.txt"].sort());
      expect(fake.calls).toContain("SandboxTagsSetV2");
      // The refill is a member again; the daemon's stop terminates it.
      await provider.pool.settled();
      await until(() => waiting(instance), (m) => m.length === 1, "the refilled member");
    } finally {
      await cleanUp(d);
      rmSync(repo, { recursive: true, force: true });
    }
    expect(waiting(instance)).toEqual([]);
  }, 300_000);
});

describe("an environment's warm pool on a daemon whose default provider is modal", () => {
  test("is made when the environment is saved, before any run; its first run takes a member; lowering warm_pool and deleting the environment remove members at once", async () => {
    // The daemon's own pool is off: only the environment asks for members. No docker engine:
    // on a machine with one, the environment would get docker members besides.
    const d = await startDaemon({
      config: { modalImage: "registry.test/paddock-sandbox:test", modalTokenId: "ak-test", modalTokenSecret: "as-test", modalServerUrl: fake.url, modalTunnelCa: fake.caFile, defaultProvider: "modal", dockerSocket: "/nonexistent/docker.sock" },
    });
    const repo = makeGitRepo();
    const instance = instanceOf(d.dataDir);
    try {
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(d.adminToken)] }));
      const env = (await envs.createEnvironment({ environment: { name: "warm-modal", networkAccess: NetworkAccess.FULL, warmPool: 2, repositories: [repo] } })).environment!;
      const provider = d.app.providers.get("modal") as ModalProvider;
      const made = await until(() => waiting(instance), (m) => m.length === 2, "two members made for the environment");
      await provider.pool.settled();

      const { task } = await d.tasks.createTask({ title: "warm modal", description: "commit a file", repository: repo, environmentId: env.id });
      const { run } = await d.runs.startRun({ taskId: task!.id, agentCommand: COMMIT });
      const final = (await watchToEnd(d, run!.id, 120_000)).pop()!;
      const text = (await allLogs(d, run!.id)).map((l) => l.text).join("\n");
      expect(final, text).toMatchObject({ status: RunStatus.COMPLETED, phase: "cleaned" });
      expect(made.some((m) => text.includes(`took the warm modal sandbox ${m.name} (${m.id}) as paddock-${run!.id}-1`)), text).toBe(true);
      expect(sh(repo, "git", "show", `${final.resultBranch}:made.txt`)).toBe("made");

      // Its refill brings the key back to two; one fewer asked for: one goes at once, not at the next run.
      await provider.pool.settled();
      await until(() => waiting(instance), (m) => m.length === 2, "the refilled pool of two");
      await envs.updateEnvironment({ environment: { ...env, warmPool: 1 } });
      await until(() => waiting(instance), (m) => m.length === 1, "one member after warm_pool 1");
      await envs.deleteEnvironment({ environmentId: env.id });
      await until(() => waiting(instance), (m) => m.length === 0, "no member once the environment is deleted");
    } finally {
      await cleanUp(d);
      rmSync(repo, { recursive: true, force: true });
    }
    expect(waiting(instance)).toEqual([]);
  }, 300_000);
});

describe("the modal provider's warm pool under a compiled daemon that is SIGKILLed", () => {
  test("the restarted daemon treats a claimed member as the run's and terminates the dead process's unclaimed one", async () => {
    execFileSync("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: "ignore" });
    const BIN = resolve(ROOT, "dist/paddock");
    const repo = makeGitRepo();
    const dataDir = tempDir("modal-pool-kill");
    const port = await freePort();
    let daemon: ChildProcess | undefined;
    const start = () => serveCompiled(BIN, { dataDir, port, env: { ...gitEnv, ...modalEnv(fake), PADDOCK_WARM_POOL: "1" } });
    try {
      daemon = await start();
      const instance = instanceOf(dataDir);
      const { tasks, runs } = compiledClients(dataDir, port);
      const { task } = await tasks.createTask({ title: "pool kill", repository: repo });
      const phaseOf = async (id: string) => (await runs.getRun({ runId: id })).run!;
      const cleaned = async (id: string) => {
        const end = Date.now() + 120_000;
        while ((await phaseOf(id)).phase !== "cleaned" && Date.now() < end) await sleep(100);
        return phaseOf(id);
      };
      for (const _ of [1, 2]) {
        const { run } = await runs.startRun({ taskId: task!.id, provider: "modal", agentCommand: ["true"] });
        expect(await cleaned(run!.id)).toMatchObject({ status: RunStatus.COMPLETED });
      }
      const [member] = await until(() => waiting(instance), (m) => m.length === 1, "one ready member");
      // It runs until the test lets it finish: across the daemon's death and restart.
      const agent = ["sh", "-c", "echo waiting; while [ ! -e go ]; do sleep 0.05; done; rm go; echo kept > kept.txt; git add kept.txt; git -c user.name=a -c user.email=a@x commit -qm kept; echo done"];
      const { run } = await runs.startRun({ taskId: task!.id, provider: "modal", agentCommand: agent });
      await until(() => member!.tags["paddock.run"], (r) => r === run!.id, "the member to be claimed for the run");
      // The refill: a member of the dead process nobody claimed.
      const [unclaimed] = await until(() => waiting(instance), (m) => m.length === 1, "the refilled member");
      expect(existsSync(join(dataDir, "modal", `paddock-${run!.id}-1.json`))).toBe(true);
      // The agent runs in the claimed member when the daemon dies.
      for (let i = 0; i < 1200 && (await phaseOf(run!.id)).phase !== "running"; i++) await sleep(100);
      expect((await phaseOf(run!.id)).phase).toBe("running");
      await killHard(daemon);
      expect(unclaimed!.main.exit).toBeNull();
      expect(member!.main.exit).toBeNull();

      daemon = await start();
      writeFileSync(join(member!.dir, "workspace", "go"), "");
      const final = await cleaned(run!.id);
      const lines: string[] = [];
      for await (const res of runs.streamLogs({ runId: run!.id, follow: false })) lines.push(...res.entries.map((l) => l.text));
      expect(final, lines.join("\n")).toMatchObject({ status: RunStatus.COMPLETED, phase: "cleaned" });
      expect(lines.filter((t) => t === "waiting" || t === "done")).toEqual(["waiting", "done"]);
      expect(sh(repo, "git", "show", `paddock/${run!.id}:kept.txt`)).toBe("kept");
      // The claimed member was the run's sandbox throughout, and is gone with it.
      expect([...fake.sandboxes.values()].filter((s) => s.tags["paddock.run"] === run!.id)).toEqual([member]);
      expect(member!.terminated).toBe(true);
      // The dead process's unclaimed member is reaped; nothing of the instance's pool is left running but the new daemon's.
      await until(() => unclaimed!.main.exit, (e) => e !== null, "the unclaimed member to be terminated");
      expect(unclaimed!.terminated).toBe(true);
      daemon.kill("SIGTERM");
      await new Promise((r) => daemon!.once("exit", r));
      expect(waiting(instance)).toEqual([]);
    } finally {
      if (daemon && daemon.exitCode === null && !daemon.signalCode) daemon.kill("SIGKILL");
      rmSync(repo, { recursive: true, force: true });
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 300_000);
});
