import { execFileSync, type ChildProcess } from "node:child_process";
import { readdirSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { describe, expect, test } from "vitest";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { allLogs, bearer, cleanUp, compiledClients, type Daemon, freePort, gitEnv, instanceOf, killHard, makeGitRepo, serveCompiled, sh, startDaemon, tempDir, waitForPhase, watchToEnd } from "./fixtures.js";
import { Status, type FakeModal, modalEnv } from "./fake-modal.js";
import { useFakeModal } from "./fake-modal-hooks.js";

/**
 * The modal provider against a local fake of Modal's control plane (test/fake-modal.ts),
 * driven by the real SDK and a real daemon; each sandbox runs this worktree's dist/paddock.
 */
const ROOT = resolve(import.meta.dirname, "..");
let fake: FakeModal;
useFakeModal((f) => (fake = f));

function modalDaemon(extra: Record<string, string> = {}): Promise<Daemon> {
  return startDaemon({
    config: { modalImage: "registry.test/paddock-sandbox:test", modalServerUrl: fake.url, modalTunnelCa: fake.caFile, modalTokenId: "ak-test", modalTokenSecret: "as-test", ...extra },
  });
}

async function modalTask(d: Daemon, repo: string) {
  const { task } = await d.tasks.createTask({ title: "modal task", description: "commit a file", repository: repo });
  return task!;
}

const sandboxesOf = (runId: string) => fake.running().filter((s) => s.tags["paddock.run"] === runId);

const COMMIT = ["sh", "-c", 'read -r p; echo "got: $p"; echo made > made.txt; git add made.txt; git -c user.name=a -c user.email=a@x commit -qm made; echo left > uncommitted.txt; echo bye >&2'];

describe("the modal provider", () => {
  test("create → run → logs → complete → cleaned: the work arrives on paddock/<run>, the sandbox is gone", async () => {
    const d = await modalDaemon();
    const repo = makeGitRepo();
    try {
      const task = await modalTask(d, repo);
      const { run } = await d.runs.startRun({ taskId: task.id, provider: "modal", agentCommand: COMMIT, limits: { cpus: 1.5, memoryBytes: 2n * 1024n ** 3n } });
      const seen = await watchToEnd(d, run!.id, 120_000);
      const final = seen[seen.length - 1]!;
      const lines = await allLogs(d, run!.id);
      const sbDebug = [...fake.sandboxes.values()].find((s) => s.tags["paddock.run"] === run!.id);
      expect(final, `${final.errorMessage}\n${d.logs.filter((l) => /"level":(40|50)/.test(l)).join("\n").slice(0, 3000)}\n${JSON.stringify(fake.calls)}\n${lines.map((l) => l.text).join("\n")}\n${sbDebug?.main.out[1]?.toString()}`).toMatchObject({ status: RunStatus.COMPLETED, exitCode: 0, phase: "cleaned", networkPolicyEnforced: false });
      expect(lines.find((l) => l.stream === "stdout")?.text).toBe("got: modal task");
      expect(lines.filter((l) => l.stream === "stderr").map((l) => l.text)).toEqual(["bye"]);
      expect(final.resultBranch).toBe(`paddock/${run!.id}`);
      expect(sh(repo, "git", "rev-parse", final.resultBranch)).toBe(final.resultCommit);
      expect(sh(repo, "git", "show", `${final.resultBranch}:made.txt`)).toBe("made");
      expect(sh(repo, "git", "show", `${final.resultBranch}:uncommitted.txt`)).toBe("left");
      expect(sandboxesOf(run!.id)).toEqual([]);
      const sb = [...fake.sandboxes.values()].find((s) => s.tags["paddock.run"] === run!.id)!;
      expect(sb.name).toBe(`paddock-${run!.id}-1`);
      expect(sb.tags["paddock.instance"]).toMatch(/.+/);
      expect(sb.definition.resources).toMatchObject({ milliCpu: 1500, memoryMb: 2048 });
      expect(sb.definition.timeoutSecs).toBeGreaterThan(3600);
      expect(sb.definition.openPorts.ports.map((p: { port: number }) => p.port)).toEqual([47821]);
      expect(sb.terminated).toBe(true);
    } finally {
      await cleanUp(d);
    }
  });

  test("a cancel while provisioning (create in flight) ends cleaned with no sandbox left", async () => {
    const d = await modalDaemon();
    const repo = makeGitRepo();
    try {
      const task = await modalTask(d, repo);
      fake.hang("SandboxCreateV2", true);
      const { run } = await d.runs.startRun({ taskId: task.id, provider: "modal", agentCommand: ["sh", "-c", "sleep 300"] });
      await waitForPhase(d, run!.id, "provisioning");
      for (let i = 0; i < 400 && !fake.calls.includes("SandboxCreateV2"); i++) await new Promise((r) => setTimeout(r, 25));
      await d.runs.cancelRun({ runId: run!.id });
      fake.hang("SandboxCreateV2", false); // the create lands after the cancel
      const final = (await watchToEnd(d, run!.id, 120_000)).pop()!;
      expect(final).toMatchObject({ status: RunStatus.CANCELLED, phase: "cleaned" });
      expect(sandboxesOf(run!.id)).toEqual([]);
    } finally {
      fake.hang("SandboxCreateV2", false);
      await cleanUp(d);
    }
  });

  test("a cancel while running stops the agent and terminates the sandbox", async () => {
    const d = await modalDaemon();
    const repo = makeGitRepo();
    try {
      const task = await modalTask(d, repo);
      const { run } = await d.runs.startRun({ taskId: task.id, provider: "modal", agentCommand: ["sh", "-c", "echo up; exec sleep 300"] });
      await waitForPhase(d, run!.id, "running", 60_000);
      expect(sandboxesOf(run!.id)).toHaveLength(1);
      await d.runs.cancelRun({ runId: run!.id });
      const final = (await watchToEnd(d, run!.id, 120_000)).pop()!;
      expect(final).toMatchObject({ status: RunStatus.CANCELLED, phase: "cleaned" });
      expect(sandboxesOf(run!.id)).toEqual([]);
    } finally {
      await cleanUp(d);
    }
  });

  test("a sandbox killed from outside fails the run, which says the work was lost and is cleaned", async () => {
    const d = await modalDaemon();
    const repo = makeGitRepo();
    try {
      const task = await modalTask(d, repo);
      const { run } = await d.runs.startRun({ taskId: task.id, provider: "modal", agentCommand: ["sh", "-c", "echo up; exec sleep 300"] });
      await waitForPhase(d, run!.id, "running", 60_000);
      fake.kill(`paddock-${run!.id}-1`);
      const final = (await watchToEnd(d, run!.id, 120_000)).pop()!;
      expect(final).toMatchObject({ status: RunStatus.FAILED, phase: "cleaned" });
      const text = (await allLogs(d, run!.id)).map((l) => l.text).join("\n");
      expect(text).toMatch(/the agent's work in it was lost/);
      expect(sandboxesOf(run!.id)).toEqual([]);
    } finally {
      await cleanUp(d);
    }
  });

  test("with exit snapshots on, a killed sandbox's work is recovered from its exit snapshot", async () => {
    const d = await modalDaemon({ modalExitSnapshots: "on" });
    const repo = makeGitRepo();
    try {
      const task = await modalTask(d, repo);
      const agent = ["sh", "-c", "echo made > made.txt; git add made.txt; git -c user.name=a -c user.email=a@x commit -qm made; echo committed; exec sleep 300"];
      const { run } = await d.runs.startRun({ taskId: task.id, provider: "modal", agentCommand: agent });
      for (let i = 0; i < 600; i++) {
        if ((await allLogs(d, run!.id)).some((l) => l.text === "committed")) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      fake.kill(`paddock-${run!.id}-1`);
      const final = (await watchToEnd(d, run!.id, 120_000)).pop()!;
      const text = (await allLogs(d, run!.id)).map((l) => l.text).join("\n");
      expect(final, text).toMatchObject({ status: RunStatus.FAILED, phase: "cleaned" });
      expect(text).toMatch(/recovered from its exit snapshot/);
      expect(sh(repo, "git", "show", `${final.resultBranch}:made.txt`)).toBe("made");
      expect(fake.running().filter((s) => s.tags["paddock.run"] === run!.id)).toEqual([]);
    } finally {
      await cleanUp(d);
    }
  });

  test("the reaper terminates this instance's orphans and never another instance's", async () => {
    const d = await modalDaemon();
    try {
      const instance = instanceOf(d.dataDir);
      const app = `paddock-${instance}`;
      const orphan = await fake.foreign(app, "paddock-run_orphan1-1", { "paddock.instance": instance, "paddock.run": "run_orphan1", "paddock.sandbox": "paddock-run_orphan1-1" });
      const other = await fake.foreign(app, "paddock-run_other1-1", { "paddock.instance": "someone-else", "paddock.run": "run_other1", "paddock.sandbox": "paddock-run_other1-1" });
      const removed = await d.app.runs.reap();
      expect(removed).toContain("paddock-run_orphan1-1");
      expect(removed).not.toContain("paddock-run_other1-1");
      for (let i = 0; i < 200 && !orphan.main.exit; i++) await new Promise((r) => setTimeout(r, 25));
      expect(orphan.main.exit).not.toBeNull();
      expect(other.main.exit).toBeNull();
      fake.kill("paddock-run_other1-1");
    } finally {
      await cleanUp(d);
    }
  });

  test("network policy: trusted becomes Modal's domain allowlist (enforced, said in the log); a port Modal cannot express is refused", async () => {
    const d = await modalDaemon();
    const repo = makeGitRepo();
    try {
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(d.adminToken)] }));
      const trusted = (await envs.createEnvironment({ environment: { name: "trusted", networkAccess: NetworkAccess.TRUSTED } })).environment!;
      const ssh = (await envs.createEnvironment({ environment: { name: "ssh", networkAccess: NetworkAccess.CUSTOM, allowedDomains: ["git.internal.test:22"] } })).environment!;
      const { task } = await d.tasks.createTask({ title: "net", repository: repo });
      const ok = (await d.runs.startRun({ taskId: task!.id, provider: "modal", environmentId: trusted.id, agentCommand: ["true"] })).run!;
      const okFinal = (await watchToEnd(d, ok.id, 120_000)).pop()!;
      expect(okFinal).toMatchObject({ status: RunStatus.COMPLETED, networkPolicyEnforced: true });
      const sb = [...fake.sandboxes.values()].find((s) => s.tags["paddock.run"] === ok.id)!;
      expect(sb.definition.networkAccess.networkAccessType).toBe(3); // ALLOWLIST
      expect(sb.definition.networkAccess.allowedCidrs).toEqual([]);
      expect(sb.definition.networkAccess.allowedDomains).toEqual(expect.arrayContaining(["github.com", "registry.npmjs.org", "*.githubusercontent.com"]));
      expect((await allLogs(d, ok.id)).map((l) => l.text).join("\n")).toMatch(/network policy enforced by Modal: outbound HTTPS \(port 443\) to \d+ domains only .*no per-request egress audit on Modal/);

      const bad = (await d.runs.startRun({ taskId: task!.id, provider: "modal", environmentId: ssh.id, agentCommand: ["true"] })).run!;
      const badFinal = (await watchToEnd(d, bad.id, 60_000)).pop()!;
      expect(badFinal).toMatchObject({ status: RunStatus.FAILED, phase: "cleaned" });
      expect(badFinal.errorMessage).toMatch(/modal cannot enforce this run's network policy: .*git\.internal\.test:22.*port 22/);
      expect(fake.sandboxes.size && [...fake.sandboxes.values()].filter((s) => s.tags["paddock.run"] === bad.id)).toEqual([]);
    } finally {
      await cleanUp(d);
    }
  });

  test("auth failure and quota errors become clear run errors; transient ones are retried with backoff", async () => {
    fake.failNext("AuthTokenGet", Status.UNAUTHENTICATED, "invalid token id/secret", 1000);
    const d = await modalDaemon();
    const repo = makeGitRepo();
    try {
      const { task } = await d.tasks.createTask({ title: "errors", repository: repo });
      const auth = (await d.runs.startRun({ taskId: task!.id, provider: "modal", agentCommand: ["true"] })).run!;
      const authFinal = (await watchToEnd(d, auth.id, 60_000)).pop()!;
      expect(authFinal).toMatchObject({ status: RunStatus.FAILED, phase: "cleaned" });
      expect(authFinal.errorMessage).toMatch(/modal: .*authentication failed \(set --modal-token-id/);
      fake.failNext("AuthTokenGet", Status.UNAUTHENTICATED, "", 0);

      // The next call gets a fresh token: the client is made again by a restarted daemon.
      const d2 = await restart(d);
      fake.failNext("SandboxCreateV2", Status.RESOURCE_EXHAUSTED, "sandbox quota exceeded for workspace", 1);
      const quota = (await d2.runs.startRun({ taskId: task!.id, provider: "modal", agentCommand: ["true"] })).run!;
      const quotaFinal = (await watchToEnd(d2, quota.id, 60_000)).pop()!;
      expect(quotaFinal).toMatchObject({ status: RunStatus.FAILED, phase: "cleaned" });
      expect(quotaFinal.errorMessage).toMatch(/modal: create sandbox: quota or capacity exhausted.*sandbox quota exceeded/);
      expect((await allLogs(d2, quota.id)).map((l) => l.text).join("\n")).not.toMatch(/lost/); // no sandbox, so no work to lose

      // More UNAVAILABLEs than the SDK retries by itself: the daemon's backoff takes over.
      const before = fake.calls.filter((c) => c === "SandboxCreateV2").length;
      fake.failNext("SandboxCreateV2", Status.UNAVAILABLE, "try again later", 5);
      const flaky = (await d2.runs.startRun({ taskId: task!.id, provider: "modal", agentCommand: ["true"] })).run!;
      const flakyFinal = (await watchToEnd(d2, flaky.id, 120_000)).pop()!;
      expect(flakyFinal).toMatchObject({ status: RunStatus.COMPLETED, phase: "cleaned" });
      expect(fake.calls.filter((c) => c === "SandboxCreateV2").length - before).toBe(6);
      await cleanUp(d2);
    } finally {
      fake.failNext("AuthTokenGet", Status.UNAUTHENTICATED, "", 0);
      fake.failNext("SandboxCreateV2", Status.UNAVAILABLE, "", 0);
    }
  });

  test("a control plane that does not answer fails the run in bounded time; the daemon keeps serving", async () => {
    const d = await modalDaemon({ modalCallTimeout: "2s" });
    const repo = makeGitRepo();
    try {
      const { task } = await d.tasks.createTask({ title: "dead", repository: repo });
      fake.hang("SandboxCreateV2", true);
      const stuck = (await d.runs.startRun({ taskId: task!.id, provider: "modal", agentCommand: ["true"] })).run!;
      // Meanwhile a local run goes through start to end.
      const local = (await d.runs.startRun({ taskId: task!.id, provider: "local", agentCommand: ["sh", "-c", "echo fine"] })).run!;
      expect((await watchToEnd(d, local.id, 60_000)).pop()).toMatchObject({ status: RunStatus.COMPLETED, phase: "cleaned" });
      const final = (await watchToEnd(d, stuck.id, 120_000)).pop()!;
      expect(final).toMatchObject({ status: RunStatus.FAILED, phase: "cleaned" });
      expect(final.errorMessage).toMatch(/modal: create sandbox: the control plane did not answer within 2s/);
    } finally {
      fake.hang("SandboxCreateV2", false);
      await cleanUp(d);
    }
  });

  test("a snapshot after clone and setup starts the next run of the key (setup skipped); GC deletes old snapshot images", async () => {
    const d = await modalDaemon();
    const repo = makeGitRepo();
    try {
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(d.adminToken)] }));
      const env = (await envs.createEnvironment({ environment: { name: "setup", networkAccess: NetworkAccess.FULL, setupScript: "echo setup-ran; echo dep > .dep" } })).environment!;
      const { task } = await d.tasks.createTask({ title: "snap", repository: repo, environmentId: env.id });
      const agent = ["sh", "-c", "cat .dep"];
      const first = (await d.runs.startRun({ taskId: task!.id, provider: "modal", agentCommand: agent })).run!;
      expect((await watchToEnd(d, first.id, 120_000)).pop()).toMatchObject({ status: RunStatus.COMPLETED });
      const firstLogs = (await allLogs(d, first.id)).map((l) => l.text);
      expect(firstLogs).toContain("setup-ran");
      const snap = firstLogs.find((l) => /^snapshot im-\S+ taken after setup/.test(l));
      expect(snap, firstLogs.join("\n")).toBeDefined();
      const imageId = snap!.split(" ")[1]!;
      // Setup ran under its own policy (trusted: the allowlist), the agent under the environment's (full).
      const firstSb = [...fake.sandboxes.values()].find((s) => s.tags["paddock.run"] === first.id)!;
      expect(firstSb.definition.networkAccess.networkAccessType).toBe(3);
      expect(firstSb.definition.networkAccess.allowedDomains).toContain("github.com");
      expect(firstSb.network).toMatchObject({ allowedCidrs: ["0.0.0.0/0", "::/0"], allowedDomains: [] });
      expect(firstLogs.join("\n")).toMatch(/network policy enforced by Modal: setup outbound HTTPS .*; agent open/);
      expect(fake.images.has(imageId)).toBe(true);

      const second = (await d.runs.startRun({ taskId: task!.id, provider: "modal", agentCommand: agent })).run!;
      expect((await watchToEnd(d, second.id, 120_000)).pop()).toMatchObject({ status: RunStatus.COMPLETED });
      const secondLogs = (await allLogs(d, second.id)).map((l) => l.text);
      expect(secondLogs.join("\n")).toMatch(new RegExp(`from snapshot ${imageId}`));
      expect(secondLogs).not.toContain("setup-ran");
      expect(secondLogs).toContain("dep");
      const secondSb = [...fake.sandboxes.values()].find((s) => s.tags["paddock.run"] === second.id)!;
      expect(secondSb.definition.networkAccess?.networkAccessType ?? 1).toBe(1); // open from the start: setup is skipped
      // The snapshot's filesystem held the first run's runner state; the second run's runner dropped it at start.
      expect(fake.images.get(imageId)?.tar && execFileSync("tar", ["-tf", fake.images.get(imageId)!.tar!], { encoding: "utf8" })).toContain(`paddock/state/${first.id}/`);
      expect(readdirSync(join(secondSb.dir, "paddock", "state"))).toEqual([second.id]);

      // Age the snapshot past the limit: GC deletes its image at Modal (ImageDelete) and its row.
      const Database = (await import("better-sqlite3")).default;
      const db = new Database(`${d.dataDir}/paddock.db`);
      db.prepare("UPDATE sandbox_snapshots SET last_used_at = 0 WHERE provider = 'modal'").run();
      db.close();
      await d.app.runs.reap();
      expect(fake.calls).toContain("ImageDelete");
      expect(fake.images.has(imageId)).toBe(false);
    } finally {
      await cleanUp(d);
    }
  });
});

describe("the modal provider with a plain registry image", () => {
  test("--modal-install-paddock brings the binary in through exec stdin once per version and base, then runs start from that image", async () => {
    const d = await modalDaemon({ modalImage: "registry.test/debian-with-git:plain", modalInstallPaddock: resolve(ROOT, "dist/paddock"), modalCallTimeout: "20s" });
    const repo = makeGitRepo();
    try {
      const task = await modalTask(d, repo);
      const ids: string[] = [];
      for (let i = 0; i < 2; i++) {
        const { run } = await d.runs.startRun({ taskId: task.id, provider: "modal", agentCommand: COMMIT });
        const final = (await watchToEnd(d, run!.id, 180_000)).pop()!;
        const text = (await allLogs(d, run!.id)).map((l) => l.text).join("\n");
        expect(final, `${final.errorMessage}\n${fake.unimplemented.join(",")}\n${text}`).toMatchObject({ status: RunStatus.COMPLETED, phase: "cleaned" });
        expect(sh(repo, "git", "show", `${final.resultBranch}:made.txt`)).toBe("made");
        ids.push(run!.id);
      }
      const first = (await allLogs(d, ids[0]!)).map((l) => l.text);
      expect(first.join("\n")).toMatch(/bringing paddock .* into registry\.test\/debian-with-git:plain \(once per paddock version\)/);
      expect((await allLogs(d, ids[1]!)).map((l) => l.text).join("\n")).not.toMatch(/bringing paddock/);
      const installs = [...fake.sandboxes.values()].filter((s) => s.name.startsWith("paddock-install-"));
      expect(installs).toHaveLength(1);
      expect(installs[0]!.main.exit).not.toBeNull(); // terminated after its snapshot
      // The runs ran the installed binary (the fake maps /paddock/bin/paddock into each sandbox's own files).
      const runSb = [...fake.sandboxes.values()].find((s) => s.tags["paddock.run"] === ids[1])!;
      expect(runSb.definition.entrypointArgs).toEqual(["/paddock/bin/paddock", "agent"]);
      expect(fake.calls).toEqual(expect.arrayContaining(["TaskExecStart", "TaskExecStdinWrite", "TaskSnapshotFilesystem"]));
    } finally {
      await cleanUp(d);
    }
  }, 300_000);
});

describe("the modal provider under a compiled daemon that is SIGKILLed", () => {
  test("find-or-create: a create the daemon never heard back from is found by name after the restart, not made twice", async () => {
    execFileSync("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: "ignore" });
    const BIN = resolve(ROOT, "dist/paddock");
    const repo = makeGitRepo();
    const dataDir = tempDir("modal-kill");
    const port = await freePort();
    let daemon: ChildProcess | undefined;
    const start = () => serveCompiled(BIN, { dataDir, port, env: { ...gitEnv, ...modalEnv(fake) } });
    try {
      daemon = await start();
      const { tasks, runs } = compiledClients(dataDir, port);
      const { task } = await tasks.createTask({ title: "kill", repository: repo });
      fake.hangAfter("SandboxCreateV2", true);
      const { run } = await runs.startRun({ taskId: task!.id, provider: "modal", agentCommand: ["sh", "-c", "i=0; while [ $i -lt 20 ]; do echo tick-$i; i=$((i+1)); sleep 0.05; done"] });
      const made = () => [...fake.sandboxes.values()].filter((s) => s.tags["paddock.run"] === run!.id);
      for (let i = 0; i < 600 && made().length === 0; i++) await sleep(50);
      expect(made()).toHaveLength(1);
      await killHard(daemon);
      fake.hangAfter("SandboxCreateV2", false);
      daemon = await start();
      let phase = "";
      for (let i = 0; i < 1200 && phase !== "cleaned"; i++) {
        phase = (await runs.getRun({ runId: run!.id })).run!.phase;
        if (phase !== "cleaned") await sleep(100);
      }
      const final = (await runs.getRun({ runId: run!.id })).run!;
      const ticks: string[] = [];
      for await (const res of runs.streamLogs({ runId: run!.id, follow: false })) ticks.push(...res.entries.map((l) => l.text));
      expect(final, ticks.join("\n")).toMatchObject({ status: RunStatus.COMPLETED, phase: "cleaned" });
      expect(ticks.filter((t) => t.startsWith("tick-"))).toEqual(Array.from({ length: 20 }, (_, i) => `tick-${i}`));
      expect(made()).toHaveLength(1); // found by name, never created a second time
      expect(fake.running().filter((s) => s.tags["paddock.run"] === run!.id)).toEqual([]);
      daemon.kill("SIGTERM");
      await new Promise((r) => daemon!.once("exit", r));
    } finally {
      fake.hangAfter("SandboxCreateV2", false);
      if (daemon && daemon.exitCode === null && !daemon.signalCode) daemon.kill("SIGKILL");
      rmSync(repo, { recursive: true, force: true });
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 300_000);
});

/** Stops a daemon (runs stay stored) and starts another on its data dir. */
async function restart(d: Daemon): Promise<Daemon> {
  await d.app.stop();
  return d.restart();
}
