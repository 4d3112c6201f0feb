import Database from "better-sqlite3";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect } from "vitest";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import type { DockerProvider } from "../src/sandbox/docker/docker-provider.js";
import { allLogs, bearer, buildSandboxImage, cleanUp, type Daemon, dockerAvailable, sh, startDaemon, test, waitForPhase, watchToEnd } from "./fixtures.js";

/**
 * The docker provider against a real Docker engine and the sandbox image. Without an
 * engine these tests are skipped on a laptop and fail under CI=true.
 */
const dockerUp = dockerAvailable();

function containersOf(runId: string): string[] {
  return execFileSync("docker", ["ps", "-aq", "--filter", `label=paddock.run=${runId}`], { encoding: "utf8" }).split("\n").filter(Boolean);
}

async function dockerTask(d: Daemon, repo: string) {
  const { task } = await d.tasks.createTask({ title: "docker task", description: "commit a file", repository: repo });
  return task!;
}

describe.runIf(dockerUp)("the docker provider", () => {
  beforeAll(buildSandboxImage, 600_000);

  test("runs a task in a container: logs streamed, work fetched back to its branch, container removed", async ({ daemon, repo }) => {
    const task = await dockerTask(daemon, repo);
    const agent = ["sh", "-c", 'read -r p; echo "in $(hostname): $p"; echo made > made.txt; git add made.txt; git -c user.name=a -c user.email=a@x commit -qm made; echo left > uncommitted.txt; echo bye >&2'];
    const { run } = await daemon.runs.startRun({ taskId: task.id, provider: "docker", agentCommand: agent });
    expect(run!.provider).toBe("docker");
    const seen = await watchToEnd(daemon, run!.id, 120_000);
    const phases = [...new Set(seen.map((r) => r.phase))];
    expect(phases.slice(-2)).toEqual(["completed", "cleaned"]);
    const final = seen[seen.length - 1]!;
    expect(final).toMatchObject({ status: RunStatus.COMPLETED, exitCode: 0 });
    const lines = await allLogs(daemon, run!.id);
    expect(lines.find((l) => l.stream === "stdout")?.text).toMatch(/^in [0-9a-f]{12}: docker task$/);
    expect(lines.filter((l) => l.stream === "stderr").map((l) => l.text)).toEqual(["bye"]);
    expect(sh(repo, "git", "rev-parse", final.resultBranch)).toBe(final.resultCommit);
    expect(sh(repo, "git", "show", `${final.resultBranch}:made.txt`)).toBe("made");
    expect(sh(repo, "git", "show", `${final.resultBranch}:uncommitted.txt`)).toBe("left");
    expect(containersOf(run!.id)).toEqual([]);
  });

  test("a cancel while running stops the agent and removes the container", async ({ daemon, repo }) => {
    const task = await dockerTask(daemon, repo);
    const { run } = await daemon.runs.startRun({ taskId: task.id, provider: "docker", agentCommand: ["sh", "-c", "echo up; exec sleep 300"] });
    await waitForPhase(daemon, run!.id, "running", 120_000);
    expect(containersOf(run!.id)).toHaveLength(1);
    await daemon.runs.cancelRun({ runId: run!.id });
    const final = (await watchToEnd(daemon, run!.id, 120_000)).pop()!;
    expect(final).toMatchObject({ status: RunStatus.CANCELLED, phase: "cleaned" });
    expect(containersOf(run!.id)).toEqual([]);
  });

  test("a cancel while provisioning ends cleaned with no container left", async ({ daemon, repo }) => {
    const task = await dockerTask(daemon, repo);
    const { run } = await daemon.runs.startRun({ taskId: task.id, provider: "docker", agentCommand: ["true"] });
    await waitForPhase(daemon, run!.id, "provisioning");
    await daemon.runs.cancelRun({ runId: run!.id });
    const final = (await watchToEnd(daemon, run!.id, 120_000)).pop()!;
    expect(final).toMatchObject({ status: RunStatus.CANCELLED, phase: "cleaned" });
    expect(containersOf(run!.id)).toEqual([]);
  });

  test("a container killed from outside fails the run, which is still cleaned", async ({ daemon, repo }) => {
    const task = await dockerTask(daemon, repo);
    const { run } = await daemon.runs.startRun({ taskId: task.id, provider: "docker", agentCommand: ["sh", "-c", "echo up; exec sleep 300"] });
    await waitForPhase(daemon, run!.id, "running", 120_000);
    const [id] = containersOf(run!.id);
    execFileSync("docker", ["kill", id!], { stdio: "ignore" });
    const final = (await watchToEnd(daemon, run!.id, 120_000)).pop()!;
    expect(final.status).toBe(RunStatus.FAILED);
    expect(final.errorMessage).toMatch(/^sandbox died: /);
    expect(containersOf(run!.id)).toEqual([]);
  });

  test("an unknown branch fails provisioning with git's reason", async ({ daemon, repo }) => {
    const task = await dockerTask(daemon, repo);
    const { run } = await daemon.runs.startRun({ taskId: task.id, provider: "docker", branch: "nope", agentCommand: ["true"] });
    const final = (await watchToEnd(daemon, run!.id, 120_000)).pop()!;
    expect(final.status).toBe(RunStatus.FAILED);
    expect(final.errorMessage).toMatch(/^provisioning failed: .*branch "nope" not found/);
    expect(containersOf(run!.id)).toEqual([]);
  });

  test("the reaper removes this daemon's orphans, stuck in created too, and nothing else", async ({ daemon }) => {
    const db = new Database(join(daemon.dataDir, "paddock.db"), { readonly: true });
    const instance = (db.prepare("SELECT value FROM meta WHERE key = 'instance_id'").get() as { value: string }).value;
    db.close();
    const create = (name: string, labels: string[]) =>
      execFileSync("docker", ["create", "--name", name, ...labels.flatMap((l) => ["--label", l]), process.env.PADDOCK_TEST_IMAGE || "paddock-sandbox:latest"], { encoding: "utf8" }).trim();
    const suffix = Date.now().toString(36);
    const orphan = create(`paddock-run_ghost${suffix}-1`, [`paddock.instance=${instance}`, `paddock.run=run_ghost${suffix}`]);
    const foreign = create(`paddock-run_other${suffix}-1`, ["paddock.instance=another-daemon", `paddock.run=run_other${suffix}`]);
    const unlabelled = create(`paddock-unlabelled${suffix}`, []);
    try {
      const removed = await daemon.app.runs.reap();
      expect(removed).toEqual([`paddock-run_ghost${suffix}-1`]);
      const left = execFileSync("docker", ["ps", "-aq", "--no-trunc"], { encoding: "utf8" });
      expect(left).not.toContain(orphan);
      expect(left).toContain(foreign);
      expect(left).toContain(unlabelled);
    } finally {
      execFileSync("docker", ["rm", "-fv", foreign, unlabelled], { stdio: "ignore" });
    }
  });

  test("a snapshot is taken after the first clone; the next run starts from it and sees the new commit", async ({ daemon, repo }) => {
    const task = await dockerTask(daemon, repo);
    const show = ["sh", "-c", "git log -1 --format=%s"];
    const first = (await daemon.runs.startRun({ taskId: task.id, provider: "docker", agentCommand: show })).run!;
    await watchToEnd(daemon, first.id, 120_000);
    const firstLogs = await allLogs(daemon, first.id);
    const taken = firstLogs.find((l) => l.text.startsWith("snapshot paddock-snapshot:"))?.text;
    expect(taken).toBeDefined();
    const image = /snapshot (paddock-snapshot:\S+) taken/.exec(taken!)![1]!;
    expect(execFileSync("docker", ["image", "inspect", "-f", "{{.Id}}", image], { encoding: "utf8" }).trim()).toMatch(/^sha256:/);

    sh(repo, "git", "commit", "--allow-empty", "-q", "-m", "a newer commit");
    const second = (await daemon.runs.startRun({ taskId: task.id, provider: "docker", agentCommand: show })).run!;
    const final = (await watchToEnd(daemon, second.id, 120_000)).pop()!;
    expect(final.status).toBe(RunStatus.COMPLETED);
    const lines = await allLogs(daemon, second.id);
    expect(lines.some((l) => l.text.includes(`from snapshot ${image}`))).toBe(true);
    expect(lines.filter((l) => l.stream === "stdout").map((l) => l.text)).toEqual(["a newer commit"]);

    const db = new Database(join(daemon.dataDir, "paddock.db"), { readonly: true });
    const rows = db.prepare("SELECT status, external_id AS image, commit_sha AS sha FROM sandbox_snapshots").all() as { status: string; image: string; sha: string }[];
    db.close();
    expect(rows).toEqual([{ status: "complete", image, sha: sh(repo, "git", "rev-parse", "HEAD~1") }]);
  });

  test("from a settled snapshot, a run whose branch has not moved starts on it without a fetch; once the branch moves, the run fetches", async ({ daemon, repo }) => {
    const task = await dockerTask(daemon, repo);
    const look = ["sh", "-c", 'git log -1 --format=%s; git branch --show-current; git status --porcelain; git for-each-ref --format="%(refname)" refs/remotes; echo work > work.txt'];
    const runOf = async () => {
      const run = (await daemon.runs.startRun({ taskId: task.id, provider: "docker", agentCommand: look })).run!;
      const final = (await watchToEnd(daemon, run.id, 120_000)).pop()!;
      expect(final.status).toBe(RunStatus.COMPLETED);
      const stdout = (await allLogs(daemon, run.id)).filter((l) => l.stream === "stdout").map((l) => l.text);
      return { id: run.id, stdout };
    };
    const first = await runOf(); // the snapshot's run: its clone has the source's branches of then
    await (daemon.app.providers.get("docker") as DockerProvider).snapshotsSettled();
    const remotes = ["refs/remotes/origin/HEAD", "refs/remotes/origin/feature", "refs/remotes/origin/main"];

    // main has not moved (the first run's result branch is new in the source): no fetch, so
    // the remote-tracking branches are the snapshot's, without that result branch.
    const unchanged = await runOf();
    expect(unchanged.stdout).toEqual(["initial", `paddock/${unchanged.id}`, ...remotes]);
    // Its work comes back on its branch, as from any start.
    expect(sh(repo, "git", "show", `paddock/${unchanged.id}:work.txt`)).toBe("work");

    // main moved: the run fetches, and starts from the new commit with every branch.
    sh(repo, "git", "commit", "--allow-empty", "-q", "-m", "a newer commit");
    const moved = await runOf();
    expect(moved.stdout).toEqual([
      "a newer commit",
      `paddock/${moved.id}`,
      ...remotes,
      `refs/remotes/origin/paddock/${first.id}`,
      `refs/remotes/origin/paddock/${unchanged.id}`,
    ]);
  });

  test("per-run limits reach the container; a runtime the engine lacks fails provisioning clearly", async ({ daemon, repo }) => {
    const task = await dockerTask(daemon, repo);
    const limits = { cpus: 0.5, memoryBytes: 256n * 1024n * 1024n, pids: 64 };
    const { run } = await daemon.runs.startRun({ taskId: task.id, provider: "docker", limits, agentCommand: ["sh", "-c", "echo up; exec sleep 300"] });
    expect(run!.limits).toMatchObject(limits);
    await waitForPhase(daemon, run!.id, "running", 120_000);
    const [id] = containersOf(run!.id);
    const host = JSON.parse(execFileSync("docker", ["inspect", "-f", "{{json .HostConfig}}", id!], { encoding: "utf8" })) as { NanoCpus: number; Memory: number; PidsLimit: number };
    expect(host).toMatchObject({ NanoCpus: 500_000_000, Memory: 268_435_456, PidsLimit: 64 });
    await daemon.runs.cancelRun({ runId: run!.id });
    await watchToEnd(daemon, run!.id, 120_000);

    const gvisor = (await daemon.runs.startRun({ taskId: task.id, provider: "docker", limits: { runtime: "no-such-runtime" }, agentCommand: ["true"] })).run!;
    const final = (await watchToEnd(daemon, gvisor.id, 120_000)).pop()!;
    expect(final.status).toBe(RunStatus.FAILED);
    expect(final.errorMessage).toMatch(/^provisioning failed: runtime no-such-runtime is not installed in the Docker engine \(it has: .*runc/);
    expect(containersOf(gvisor.id)).toEqual([]);
  });

  test("network policy is enforced: allowed names through the proxy, others refused, the host unreachable, all audited", async ({ repo }) => {
    const hits: string[] = [];
    const listener = createServer((req, res) => {
      hits.push(`${req.headers.host} ${req.url}`);
      res.end("hello from the allowed host\n");
    });
    await new Promise<void>((r) => listener.listen(0, "0.0.0.0", r));
    const port = (listener.address() as AddressInfo).port;
    const daemon = await startDaemon({ config: { egressHostMap: "allowed.test=127.0.0.1,blocked.test=127.0.0.1" } });
    try {
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", interceptors: [bearer(daemon.adminToken)] }));
      const custom = (await envs.createEnvironment({ environment: { name: "custom", networkAccess: NetworkAccess.CUSTOM, allowedDomains: [`allowed.test:${port}`] } })).environment!;
      const full = (await envs.createEnvironment({ environment: { name: "full", networkAccess: NetworkAccess.FULL } })).environment!;
      // bash and coreutils only: the sandbox image has no curl.
      const probe = [
        "bash",
        "-c",
        `set -u
p=\${HTTP_PROXY:-}
get() { # get HOST: a plain HTTP GET through the proxy; prints the status line
  local hp=\${p##*@}; hp=\${hp%/}; local auth; auth=$(printf %s "\${p#http://}" | sed 's/@.*//' | base64 -w0)
  exec 3<>/dev/tcp/\${hp%%:*}/\${hp##*:}
  printf 'GET http://%s:${port}/probe HTTP/1.1\\r\\nHost: %s:${port}\\r\\nProxy-Authorization: Basic %s\\r\\nConnection: close\\r\\n\\r\\n' "$1" "$1" "$auth" >&3
  head -1 <&3 | tr -d '\\r'; exec 3<&-
}
direct() { timeout 3 bash -c "exec 3<>/dev/tcp/$1/${port}" 2>/dev/null && echo "direct $1: open" || echo "direct $1: closed"; }
if [ -n "$p" ]; then echo "allowed: $(get allowed.test)"; echo "blocked: $(get blocked.test)"; gw=\${p##*@}; direct \${gw%%:*}; else direct 172.17.0.1; fi`,
      ];
      const run = async (environmentId: string) => {
        const { task } = await daemon.tasks.createTask({ title: "net", repository: repo, environmentId });
        const { run } = await daemon.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: probe });
        const final = (await watchToEnd(daemon, run!.id, 120_000)).pop()!;
        const out = (await allLogs(daemon, run!.id)).filter((l) => l.stream !== "system").map((l) => l.text);
        return { final, out };
      };

      const restricted = await run(custom.id);
      expect(restricted.final).toMatchObject({ status: RunStatus.COMPLETED, networkPolicyEnforced: true });
      expect(restricted.out).toEqual(["allowed: HTTP/1.1 200 OK", "blocked: HTTP/1.1 403 Forbidden", expect.stringMatching(/^direct [\d.]+: closed$/)]);
      expect(hits).toEqual([`allowed.test:${port} /probe`]);
      const { attempts } = await daemon.runs.listRunEgress({ runId: restricted.final.id });
      expect(attempts.map((a) => [a.host, a.port, a.verdict, Number(a.count)])).toEqual([
        ["allowed.test", port, "allowed", 1],
        ["blocked.test", port, "refused", 1],
      ]);

      const open = await run(full.id);
      expect(open.final.status).toBe(RunStatus.COMPLETED);
      // `full` is the internet, not the host: Docker's bridge gateway is fenced off too.
      expect(open.out).toEqual(["direct 172.17.0.1: closed"]);
    } finally {
      listener.close();
      await cleanUp(daemon);
    }
  });

  test("the setup script and the agent each get their own network policy", async ({ repo }) => {
    const listener = createServer((_req, res) => res.end("ok\n"));
    await new Promise<void>((r) => listener.listen(0, "127.0.0.1", r));
    const port = (listener.address() as AddressInfo).port;
    // The probe lives in the repository, so setup (run by sh) and the agent can both run it with bash.
    writeFileSync(
      join(repo, "probe.sh"),
      `p=$HTTP_PROXY; hp=\${p##*@}; hp=\${hp%/}; auth=$(printf %s "\${p#http://}" | sed 's/@.*//' | base64 -w0)
exec 3<>/dev/tcp/\${hp%%:*}/\${hp##*:}
printf 'GET http://allowed.test:${port}/ HTTP/1.1\\r\\nHost: allowed.test:${port}\\r\\nProxy-Authorization: Basic %s\\r\\nConnection: close\\r\\n\\r\\n' "$auth" >&3
echo "$1: $(head -1 <&3 | tr -d '\\r')"
`,
    );
    sh(repo, "git", "add", "probe.sh");
    sh(repo, "git", "commit", "-q", "-m", "probe");
    const daemon = await startDaemon({ config: { egressHostMap: "allowed.test=127.0.0.1" } });
    try {
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", interceptors: [bearer(daemon.adminToken)] }));
      const env = (
        await envs.createEnvironment({
          environment: { name: "staged", networkAccess: NetworkAccess.CUSTOM, allowedDomains: [`allowed.test:${port}`], setupNetworkAccess: NetworkAccess.TRUSTED, setupScript: "bash probe.sh setup" },
        })
      ).environment!;
      const { task } = await daemon.tasks.createTask({ title: "staged", repository: repo, environmentId: env.id });
      const { run } = await daemon.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["bash", "probe.sh", "agent"] });
      const final = (await watchToEnd(daemon, run!.id, 120_000)).pop()!;
      expect(final.status).toBe(RunStatus.COMPLETED);
      const out = (await allLogs(daemon, run!.id)).filter((l) => l.stream !== "system").map((l) => l.text);
      expect(out).toEqual(["setup: HTTP/1.1 403 Forbidden", "agent: HTTP/1.1 200 OK"]);
    } finally {
      listener.close();
      await cleanUp(daemon);
    }
  });
});
