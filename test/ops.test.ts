import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { instanceNetworking } from "../src/sandbox/docker/egress-network.js";
import { bearer, cleanUp, dockerAvailable, gitEnv, instanceOf, makeGitRepo, startDaemon, tempDir, waitForPhase, watchToEnd } from "./fixtures.js";

const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "dist", "paddock");
const IMAGE = process.env.PADDOCK_TEST_IMAGE || "paddock-sandbox:latest";
const dockerUp = dockerAvailable();

/** The compiled binary, as an operator runs it. */
function paddock(args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(BIN, args, { encoding: "utf8", env: { ...gitEnv, PADDOCK_DOCKER_IMAGE: IMAGE } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const lineOf = (out: string, name: string) => out.split("\n").filter((l) => l.slice(6).startsWith(name));
const docker = (...args: string[]) => execFileSync("docker", args, { encoding: "utf8" }).trim();
const chains = () => execFileSync("iptables", ["-w", "-S"], { encoding: "utf8" });

beforeAll(() => {
  execFileSync("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: "inherit" });
}, 120_000);

describe("paddock doctor", () => {
  it("passes on a working machine and fails, exit 1, naming what is missing", () => {
    const dir = tempDir("doctor");
    try {
      const good = paddock(["doctor", "--data-dir", dir]);
      expect(good.out, good.err).toMatch(/^ok {4}git {11}git version /m);
      expect(lineOf(good.out, "data dir")).toEqual([`ok    data dir      ${dir}: owner ${process.getuid!()}, mode 700, secret files 600, writable`]);
      expect(lineOf(good.out, "lock")).toEqual(["ok    lock          free: no daemon runs on this data dir"]);
      if (dockerUp) {
        expect(lineOf(good.out, "docker engine")[0]).toMatch(/^ok {4}docker engine Docker \S+ \(API [\d.]+\) at \/var\/run\/docker.sock$/);
        expect(lineOf(good.out, "image")[0]).toMatch(new RegExp(`^ok {4}image {9}${IMAGE.replace(/[.:]/g, "\\$&")} `));
        expect(lineOf(good.out, "iptables")[0]).toMatch(/^ok {4}iptables/);
        expect(good.out).toMatch(/all checks passed\n$/);
        expect(good.code).toBe(0);
      }

      chmodSync(dir, 0o755);
      const bad = paddock(["doctor", "--data-dir", dir, "--docker-image", "paddock-no-such-image:0", "--docker-runtime", "no-such-runtime"]);
      expect(lineOf(bad.out, "data dir")).toEqual([`warn  data dir      ${dir} is mode 755; paddock serve makes it 0700 at start`]);
      if (dockerUp) {
        expect(lineOf(bad.out, "image")).toContain("FAIL  image         paddock-no-such-image:0 is not in the engine; build it (npm run images, see sandbox-images/) or load it");
        expect(lineOf(bad.out, "runtime")[0]).toMatch(/^FAIL  runtime       the engine has no runtime no-such-runtime \(it has: .*runc/);
        expect(bad.out).toMatch(/2 check\(s\) failed\n$/);
      }
      expect(bad.code).toBe(1);

      const noDocker = paddock(["doctor", "--data-dir", dir, "--docker-socket", join(dir, "no.sock")]);
      expect(lineOf(noDocker.out, "docker engine")).toEqual([`warn  docker engine no socket at ${join(dir, "no.sock")}: the docker provider is off, runs use the local provider (no isolation)`]);
      expect(noDocker.out).not.toMatch(/^\w+ +image/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("sees the lock of a running daemon", async () => {
    const d = await startDaemon({ config: { dockerSocket: "/nonexistent/docker.sock" } });
    try {
      const r = paddock(["doctor", "--data-dir", d.dataDir, "--docker-socket", "/nonexistent/docker.sock"]);
      expect(lineOf(r.out, "lock")).toEqual([`ok    lock          held by the daemon running on it (pid ${process.pid})`]);
      expect(lineOf(r.out, "database")[0]).toMatch(/^ok {4}database {6}schema version \d+$/);
      expect(r.code).toBe(0);
    } finally {
      await cleanUp(d);
    }
  });
});

describe.runIf(dockerUp)("paddock cleanup --instance", () => {
  it("refuses while the daemon runs or a run is unfinished; otherwise lists, then removes, exactly this instance's things", async () => {
    const repo = makeGitRepo();
    let d = await startDaemon({ config: { dockerImage: IMAGE } });
    const dataDir = d.dataDir;
    const instance = instanceOf(dataDir);
    const { networks, chains: ourChains } = instanceNetworking(instance);
    try {
      // A restricted environment with setup: its run makes the egress network, its chain and a snapshot.
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(d.adminToken)] }));
      const { environment } = await envs.createEnvironment({ environment: { name: "e", networkAccess: NetworkAccess.TRUSTED, setupScript: "echo set up" } });
      const { task } = await d.tasks.createTask({ title: "cleanup", repository: repo, environmentId: environment!.id });
      const { run: done } = await d.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["true"] });
      expect((await watchToEnd(d, done!.id, 180_000)).pop()!.status).toBe(RunStatus.COMPLETED);

      const running = paddock(["cleanup", "--instance", "--data-dir", dataDir]);
      expect(running.code).toBe(4);
      expect(running.err).toContain(`a daemon is running on ${dataDir} (pid ${process.pid}); stop it first`);

      // A run still going when the daemon stops: cleanup must leave it (and everything) alone.
      const { run: live } = await d.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["sleep", "300"] });
      await waitForPhase(d, live!.id, "running", 180_000);
      await d.app.stop();
      const refused = paddock(["cleanup", "--instance", "--yes", "--data-dir", dataDir]);
      expect(refused.code).toBe(4);
      expect(refused.err).toContain(`1 run(s) of this instance are not finished: ${live!.id} (running)`);
      expect(docker("ps", "-q", "--filter", `label=paddock.run=${live!.id}`)).not.toBe("");

      d = await d.restart();
      await d.runs.cancelRun({ runId: live!.id });
      expect((await watchToEnd(d, live!.id, 180_000)).pop()!.status).toBe(RunStatus.CANCELLED);
      await d.app.stop();

      const images = docker("images", "-q", "--filter", `label=paddock.instance=${instance}`);
      expect(images).not.toBe("");
      expect(chains()).toContain(`-N ${ourChains[0]}`);
      const plan = paddock(["cleanup", "--instance", "--data-dir", dataDir]);
      expect(plan.code, plan.err).toBe(0);
      expect(plan.out).toContain(`instance ${instance}: would remove`);
      expect(plan.out).toMatch(/^ {2}snapshot image paddock-snapshot:/m);
      expect(plan.out).toContain(`  docker network ${networks[0]}`);
      expect(plan.out).toContain(`  iptables chain ${ourChains[0]}`);
      expect(plan.out).toContain("nothing removed; run again with --yes");
      expect(docker("images", "-q", "--filter", `label=paddock.instance=${instance}`)).toBe(images);

      const removed = paddock(["cleanup", "--instance", "--yes", "--data-dir", dataDir]);
      expect(removed.code, removed.err).toBe(0);
      expect(removed.out).toMatch(/^removed snapshot image /m);
      expect(removed.out).toContain(`removed networks and firewall chains (${networks[0]}`);
      expect(docker("images", "-q", "--filter", `label=paddock.instance=${instance}`)).toBe("");
      expect(docker("ps", "-aq", "--filter", `label=paddock.instance=${instance}`)).toBe("");
      expect(docker("network", "ls", "-q", "--filter", `label=paddock.instance=${instance}`)).toBe("");
      for (const c of ourChains) expect(chains()).not.toContain(`-N ${c}\n`);

      const again = paddock(["cleanup", "--instance", "--yes", "--data-dir", dataDir]);
      expect(again.out).toContain(`instance ${instance}: nothing to remove`);
    } finally {
      await d.app.stop().catch(() => undefined);
      await cleanUp(await d.restart()).catch(() => undefined);
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(repo, { recursive: true, force: true });
    }
  }, 600_000);
});
