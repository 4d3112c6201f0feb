import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import Database from "better-sqlite3";
import { execFileSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect } from "vitest";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { allLogs, bearer, buildSandboxImage, cleanUp, type Daemon, dockerAvailable, failureOf, sh, startDaemon, tempDir, test, watchToEnd } from "./fixtures.js";

/**
 * Snapshots of docker sandboxes against a real engine: taken after setup, keyed by what they
 * were made from, skipped when their image is gone, repaired after a crash mid-commit; and
 * the operator's image allowlist and CA certificates. PADDOCK_TEST_IMAGE runs them against
 * an image already built (else the sandbox image is built, as test/docker.test.ts does).
 */
const IMAGE = process.env.PADDOCK_TEST_IMAGE || "paddock-sandbox:latest";
const dockerUp = dockerAvailable();

const docker = (...args: string[]) => execFileSync("docker", args, { encoding: "utf8" }).trim();

function envClient(d: Daemon) {
  return createClient(EnvironmentService, createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(d.adminToken)] }));
}

function instanceOf(dataDir: string): string {
  const db = new Database(join(dataDir, "paddock.db"), { readonly: true });
  const row = db.prepare("SELECT value FROM meta WHERE key = 'instance_id'").get() as { value: string };
  db.close();
  return row.value;
}

interface Row {
  id: string;
  status: string;
  image: string;
  key: string;
  base: string;
  version: string;
  env: string;
}
function snapshotRows(dataDir: string): Row[] {
  const db = new Database(join(dataDir, "paddock.db"), { readonly: true });
  const rows = db
    .prepare(
      `SELECT id, status, external_id AS image, snapshot_key AS key, base_image_id AS base, paddock_version AS version, environment_id AS env
         FROM sandbox_snapshots ORDER BY created_at`,
    )
    .all() as Row[];
  db.close();
  return rows;
}

/** Images labelled as this daemon's snapshots, by tag. */
function labelledImages(instance: string): string[] {
  return docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", `label=paddock.instance=${instance}`, "--filter", "label=paddock.snapshot")
    .split("\n")
    .filter(Boolean)
    .sort();
}

async function runToEnd(d: Daemon, taskId: string, agentCommand: string[]) {
  const { run } = await d.runs.startRun({ taskId, provider: "docker", agentCommand });
  const final = (await watchToEnd(d, run!.id, 180_000)).pop()!;
  const lines = await allLogs(d, run!.id);
  const text = (stream: string) => lines.filter((l) => l.stream === stream).map((l) => l.text);
  return { final, system: text("system"), setup: text("setup"), stdout: text("stdout") };
}

const takenImage = (system: string[]) => system.map((l) => /^snapshot (paddock-snapshot:\S+) taken after setup/.exec(l)?.[1]).find(Boolean);

describe.runIf(dockerUp)("docker snapshots", () => {
  beforeAll(buildSandboxImage, 600_000);

  test("setup runs once: the snapshot is taken after it, later runs skip it, and a changed setup script makes a new one", async ({ repo }) => {
    const daemon = await startDaemon({ config: { dockerImage: IMAGE } });
    try {
      const envs = envClient(daemon);
      const setup = (v: string) => `echo "setup ${v} ran"; echo ${v} > "$HOME/tool.txt"`;
      const env = (
        await envs.createEnvironment({ environment: { name: "tools", networkAccess: NetworkAccess.FULL, setupNetworkAccess: NetworkAccess.FULL, setupScript: setup("v1") } })
      ).environment!;
      const prompt = "the plan of run one: rotate the 7f3a keys";
      const { task } = await daemon.tasks.createTask({ title: "tools", repository: repo, environmentId: env.id, description: prompt });
      const agent = ["sh", "-c", 'cat "$HOME/tool.txt"'];

      const first = await runToEnd(daemon, task!.id, agent);
      expect(first.final.status).toBe(RunStatus.COMPLETED);
      expect(first.setup).toEqual(["setup v1 ran"]);
      expect(first.stdout).toEqual(["v1"]);
      const v1 = takenImage(first.system);
      expect(v1).toBeDefined();
      // The image keeps nothing of the run it was taken from: not its prompt, id or command.
      const imageEnv = JSON.parse(docker("image", "inspect", v1!, "--format", "{{json .Config.Env}}")) as string[];
      expect(imageEnv).toContain("PADDOCK_PROMPT=");
      expect(imageEnv.join("\n")).not.toContain(first.final.id);
      expect(imageEnv.join("\n")).not.toContain("7f3a");
      expect(imageEnv.join("\n")).not.toContain("tool.txt");

      const second = await runToEnd(daemon, task!.id, agent);
      expect(second.final.status).toBe(RunStatus.COMPLETED);
      expect(second.setup).toEqual([]);
      expect(second.stdout).toEqual(["v1"]);
      expect(second.system.filter((l) => l.includes(`from snapshot ${v1}`) && l.endsWith("setup already ran in it and is skipped"))).toHaveLength(1);
      expect(takenImage(second.system)).toBeUndefined();

      await envs.updateEnvironment({ environment: { ...env, setupScript: setup("v2") } });
      const third = await runToEnd(daemon, task!.id, agent);
      expect(third.final.status).toBe(RunStatus.COMPLETED);
      expect(third.setup).toEqual(["setup v2 ran"]);
      expect(third.stdout).toEqual(["v2"]);
      const v2 = takenImage(third.system);
      expect(v2).toBeDefined();
      expect(v2).not.toBe(v1);
      // The misses and the hit are counted; a run started from a snapshot has no setup phase.
      const metrics = await (await fetch(`${daemon.url}/metrics`)).text();
      expect(metrics).toMatch(/^paddock_snapshot_lookups_total\{provider="docker",result="miss"\} 2$/m);
      expect(metrics).toMatch(/^paddock_snapshot_lookups_total\{provider="docker",result="hit"\} 1$/m);
      expect(metrics).toMatch(/^paddock_run_phase_duration_seconds_count\{provider="docker",phase="setup"\} 2$/m);
      const phasesOf = async (runId: string) => (await daemon.runs.getRun({ runId })).run!.phaseTimings.map((t) => t.phase);
      expect(await phasesOf(first.final.id)).toEqual(["queued", "provisioning", "setup", "running", "cleanup"]);
      expect(await phasesOf(second.final.id)).toEqual(["queued", "provisioning", "running", "cleanup"]);

      const base = docker("image", "inspect", "-f", "{{.Id}}", IMAGE);
      const rows = snapshotRows(daemon.dataDir);
      expect(rows.map((r) => ({ status: r.status, image: r.image, base: r.base, version: r.version, env: r.env }))).toEqual([
        { status: "complete", image: v1, base, version: "0.1.0", env: env.id },
        { status: "complete", image: v2, base, version: "0.1.0", env: env.id },
      ]);
      expect(rows[0]!.key).not.toBe(rows[1]!.key);
      // Labelled, so that a crash mid-commit can be repaired from the engine alone.
      const labels = JSON.parse(docker("image", "inspect", "-f", "{{json .Config.Labels}}", v1!)) as Record<string, string>;
      expect(labels).toMatchObject({ "paddock.snapshot": rows[0]!.id, "paddock.instance": instanceOf(daemon.dataDir) });
    } finally {
      await cleanUp(daemon);
    }
  });

  test("a cancel while setup runs (the run still provisioning) ends cleaned: no container, no snapshot", async ({ repo }) => {
    const daemon = await startDaemon({ config: { dockerImage: IMAGE } });
    try {
      const env = (
        await envClient(daemon).createEnvironment({
          environment: { name: "slow", networkAccess: NetworkAccess.FULL, setupNetworkAccess: NetworkAccess.FULL, setupScript: "echo installing; exec sleep 300" },
        })
      ).environment!;
      const { task } = await daemon.tasks.createTask({ title: "slow", repository: repo, environmentId: env.id });
      const { run } = await daemon.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["echo", "never"] });
      for await (const res of daemon.runs.streamLogs({ runId: run!.id, follow: true }, { timeoutMs: 120_000 })) {
        if (res.entries.some((l) => l.text === "setup script started")) break;
      }
      await daemon.runs.cancelRun({ runId: run!.id });
      const final = (await watchToEnd(daemon, run!.id, 120_000)).pop()!;
      expect(final).toMatchObject({ status: RunStatus.CANCELLED, phase: "cleaned" });
      expect(docker("ps", "-aq", "--filter", `label=paddock.run=${run!.id}`)).toBe("");
      expect(snapshotRows(daemon.dataDir)).toEqual([]);
      expect((await allLogs(daemon, run!.id)).some((l) => l.text === "never")).toBe(false);
    } finally {
      await cleanUp(daemon);
    }
  });

  test("a snapshot whose image was removed behind paddock's back: one line, a cold start, the run completes; GC drops the row", async ({ repo }) => {
    const daemon = await startDaemon({ config: { dockerImage: IMAGE } });
    try {
      const { task } = await daemon.tasks.createTask({ title: "gone", repository: repo });
      const first = await runToEnd(daemon, task!.id, ["echo", "first"]);
      const image = takenImage(first.system)!;
      expect(image).toBeDefined();
      docker("rmi", "-f", image);

      const second = await runToEnd(daemon, task!.id, ["echo", "second"]);
      expect(second.final.status).toBe(RunStatus.COMPLETED);
      expect(second.stdout).toEqual(["second"]);
      expect(second.system.filter((l) => l.includes(image))).toEqual([`snapshot ${image} is gone (removed outside paddock); starting cold from ${IMAGE}`]);
      expect(second.system.join("\n")).not.toMatch(/not found/);
      const fresh = takenImage(second.system);
      expect(fresh).toBeDefined();

      await daemon.app.runs.reap();
      expect(snapshotRows(daemon.dataDir).map((r) => [r.status, r.image])).toEqual([["complete", fresh]]);
    } finally {
      await cleanUp(daemon);
    }
  });

  test("a daemon killed during a snapshot commit: at the next start the row is finished or dropped, and GC removes labelled images no row owns", async () => {
    const daemon = await startDaemon({ config: { dockerImage: IMAGE } });
    const instance = instanceOf(daemon.dataDir);
    await daemon.app.stop();
    // What a daemon killed mid-commit leaves: rows as begin() writes them, and the images the
    // engine committed (or not) with their labels.
    const db = new Database(join(daemon.dataDir, "paddock.db"));
    const begin = db.prepare(`INSERT INTO sandbox_snapshots (id, provider, snapshot_key, repository, commit_sha, setup_hash, base_image_id, paddock_version, environment_id, status, created_at, last_used_at)
      VALUES (?, 'docker', ?, '/repo', '', '', 'sha256:x', '0.1.0', '', 'in_progress', ?, ?)`);
    const suffix = Date.now().toString(36);
    begin.run("snap_committed", `kc${suffix}`, Date.now(), Date.now());
    begin.run("snap_uncommitted", `ku${suffix}`, Date.now(), Date.now());
    db.close();
    const container = docker("create", IMAGE);
    const commit = (row: string, owner: string, tag: string) => docker("commit", "--change", `LABEL paddock.snapshot=${row} paddock.instance=${owner}`, container, `paddock-snapshot:${tag}`);
    commit("snap_committed", instance, `kc${suffix}-committed`);
    // A row already gone (dropped while the engine still finished its commit).
    commit("snap_orphan", instance, `ko${suffix}-orphan`);
    commit("snap_foreign", "another-daemon", `kf${suffix}-foreign`);
    docker("rm", "-fv", container);

    const again = await daemon.restart();
    try {
      expect(snapshotRows(again.dataDir).map((r) => [r.id, r.status, r.image])).toEqual([["snap_committed", "complete", `paddock-snapshot:kc${suffix}-committed`]]);
      await again.app.runs.reap();
      expect(labelledImages(instance)).toEqual([`paddock-snapshot:kc${suffix}-committed`]);
      // Another daemon's images are not ours to remove.
      expect(docker("images", "-q", `paddock-snapshot:kf${suffix}-foreign`)).not.toBe("");
    } finally {
      docker("rmi", "-f", `paddock-snapshot:kf${suffix}-foreign`);
      await cleanUp(again);
    }
  });

  test("images outside the operator's allowlist are refused, naming the field", async ({ repo }) => {
    const daemon = await startDaemon({ config: { dockerImage: IMAGE, sandboxImages: "registry.test/tools:1" } });
    try {
      const { task } = await daemon.tasks.createTask({ title: "images", repository: repo });
      const run = await failureOf(daemon.runs.startRun({ taskId: task!.id, provider: "docker", image: "evil.test/miner:latest", agentCommand: ["true"] }));
      expect(run.code).toBe(Code.InvalidArgument);
      expect(run.rawMessage).toMatch(/^image: image "evil.test\/miner:latest" is not allowed on this daemon/);
      const local = await failureOf(daemon.runs.startRun({ taskId: task!.id, provider: "local", image: IMAGE, agentCommand: ["true"] }));
      expect(local.code).toBe(Code.InvalidArgument);
      expect(local.rawMessage).toMatch(/^image: the local provider/);

      const envs = envClient(daemon);
      const env = await failureOf(envs.createEnvironment({ environment: { name: "evil", image: "evil.test/miner:latest" } }));
      expect(env.code).toBe(Code.InvalidArgument);
      expect(env.rawMessage).toMatch(/^environment\.image: image "evil.test\/miner:latest" is not allowed/);
      const ok = (await envs.createEnvironment({ environment: { name: "tools", image: "registry.test/tools:1" } })).environment!;
      expect(ok.image).toBe("registry.test/tools:1");
    } finally {
      await cleanUp(daemon);
    }
  });

  test("the environment's image is used, and the operator's CA certificates are trusted in the sandbox", async ({ repo }) => {
    const pki = tempDir("pki");
    const alt = `${IMAGE}-alt`;
    docker("tag", IMAGE, alt);
    const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: pki, stdio: "ignore" });
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=paddock test CA", "-days", "2");
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=leaf.test");
    ssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "leaf.pem", "-days", "2");
    writeFileSync(join(repo, "leaf.pem"), execFileSync("cat", [join(pki, "leaf.pem")]));
    sh(repo, "git", "add", "leaf.pem");
    sh(repo, "git", "commit", "-q", "-m", "a certificate issued by the operator's CA");
    const daemon = await startDaemon({ config: { dockerImage: IMAGE, sandboxImages: alt, sandboxCaFile: join(pki, "ca.pem") } });
    try {
      const env = (await envClient(daemon).createEnvironment({ environment: { name: "corp", networkAccess: NetworkAccess.FULL, image: alt } })).environment!;
      const { task } = await daemon.tasks.createTask({ title: "ca", repository: repo, environmentId: env.id });
      const probe = 'openssl verify leaf.pem 2>&1; test -r "$NODE_EXTRA_CA_CERTS" && echo "node: readable"; echo "git: $GIT_SSL_CAINFO"';
      const result = await runToEnd(daemon, task!.id, ["sh", "-c", probe]);
      expect(result.final).toMatchObject({ status: RunStatus.COMPLETED, image: alt });
      expect(result.system.some((l) => l.endsWith(`from ${alt}`))).toBe(true);
      expect(result.stdout).toEqual(["leaf.pem: OK", "node: readable", "git: /etc/ssl/certs/ca-certificates.crt"]);
    } finally {
      await cleanUp(daemon);
      docker("rmi", alt);
      rmSync(pki, { recursive: true, force: true });
    }
  });
});
