import Database from "better-sqlite3";
import { execFileSync } from "node:child_process";
import { createServer, type AddressInfo, type Server } from "node:net";
import { join } from "node:path";
import { beforeAll, describe, expect, vi } from "vitest";
import type { DockerProvider } from "../src/sandbox/docker/docker-provider.js";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { allLogs, cleanUp, dockerAvailable, startDaemon, test, waitForPhase, watchToEnd, type Daemon } from "./fixtures.js";

/**
 * Unrestricted docker sandboxes (no environment, or `full`) reach the internet but not the
 * host, Docker's bridges or other sandboxes. Every probe targets a listener this test
 * opened on the host or a runner of this test's own sandboxes.
 */
const dockerUp = dockerAvailable();
const IMAGE = "paddock-sandbox:latest";

/** A TCP listener on every host address that counts the connections it accepts. */
async function hostListener(): Promise<{ server: Server; port: number; connections: () => number }> {
  let n = 0;
  const server = createServer((socket) => {
    n++;
    socket.destroy();
  });
  await new Promise<void>((r) => server.listen(0, "0.0.0.0", r));
  return { server, port: (server.address() as AddressInfo).port, connections: () => n };
}

/** The host's address on Docker's default bridge (docker0), when there is one. */
function defaultBridgeGateway(): string | undefined {
  try {
    const name = execFileSync("docker", ["network", "inspect", "bridge", "-f", '{{index .Options "com.docker.network.bridge.name"}}'], { encoding: "utf8" }).trim();
    // Node lists only interfaces that are up; docker0 is down while no container uses it.
    const addr = execFileSync("ip", ["-4", "-o", "addr", "show", "dev", name || "docker0"], { encoding: "utf8" });
    return /\binet (\d+\.\d+\.\d+\.\d+)\//.exec(addr)?.[1];
  } catch {
    return undefined;
  }
}

function instanceOf(d: Daemon): string {
  const db = new Database(join(d.dataDir, "paddock.db"), { readonly: true });
  const row = db.prepare("SELECT value FROM meta WHERE key = 'instance_id'").get() as { value: string };
  db.close();
  return row.value;
}

function containerNetworks(runId: string): Record<string, { IPAddress: string }> {
  const id = execFileSync("docker", ["ps", "-q", "--filter", `label=paddock.run=${runId}`], { encoding: "utf8" }).trim();
  return JSON.parse(execFileSync("docker", ["inspect", "-f", "{{json .NetworkSettings.Networks}}", id], { encoding: "utf8" })) as Record<string, { IPAddress: string }>;
}

/**
 * An agent that tries TCP connections and prints one line per target. "gateway" is the
 * sandbox's own default gateway, read from the routing table.
 */
function probe(targets: [label: string, ip: string, port: number][]): string[] {
  const lines = targets.map(([label, ip, port]) => `try "${label}" ${ip} ${port}`);
  return [
    "bash",
    "-c",
    `try() { timeout 3 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && echo "$1: REACHED" || echo "$1: BLOCKED"; }
h=$(awk '$2=="00000000"{print $3; exit}' /proc/net/route)
gateway=$(printf '%d.%d.%d.%d' 0x\${h:6:2} 0x\${h:4:2} 0x\${h:2:2} 0x\${h:0:2})
${lines.join("\n").replaceAll("GATEWAY", "$gateway")}`,
  ];
}

async function runProbe(d: Daemon, repo: string, agentCommand: string[]) {
  const { task } = await d.tasks.createTask({ title: "probe", repository: repo });
  const { run } = await d.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand });
  const final = (await watchToEnd(d, run!.id, 120_000)).pop()!;
  const lines = await allLogs(d, run!.id);
  return { final, out: lines.filter((l) => l.stream === "stdout").map((l) => l.text), system: lines.filter((l) => l.stream === "system").map((l) => l.text) };
}

describe.runIf(dockerUp)("host isolation of docker sandboxes", () => {
  beforeAll(() => {
    try {
      execFileSync("docker", ["image", "inspect", IMAGE], { stdio: "ignore" });
    } catch {
      throw new Error(`the sandbox image ${IMAGE} is missing: build it with npm run images`);
    }
  });

  test("an unrestricted sandbox reaches neither the host, Docker's bridge nor another sandbox, until the operator allows an address", async ({ repo }) => {
    const listener = await hostListener();
    const bridge = defaultBridgeGateway();
    let daemon: Daemon | undefined = await startDaemon();
    try {
      const instance = instanceOf(daemon);
      // A second sandbox, whose runner listens on its own address.
      const { task } = await daemon.tasks.createTask({ title: "neighbour", repository: repo });
      const neighbour = (await daemon.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["sh", "-c", "echo up; exec sleep 300"] })).run!;
      await waitForPhase(daemon, neighbour.id, "running", 120_000);
      const networks = containerNetworks(neighbour.id);
      expect(Object.keys(networks)).toEqual([`paddock-open-${instance}`]);
      const neighbourIp = networks[`paddock-open-${instance}`]!.IPAddress;

      const targets: [string, string, number][] = [
        ["gateway", "GATEWAY", listener.port],
        ...(bridge ? [["docker0", bridge, listener.port] as [string, string, number]] : []),
        ["neighbour", neighbourIp, 47821],
      ];
      // The probe's sandbox joins a network holder made ahead (the neighbour's had none ready):
      // the fence holds for both ways a sandbox gets its network.
      await (daemon.app.providers.get("docker") as DockerProvider).holders.settled();
      const fenced = await runProbe(daemon, repo, probe(targets));
      expect(fenced.system).toContainEqual(expect.stringMatching(/^its network: network holder paddock-net-[0-9a-f]+'s, set up before the run$/));
      // The run completing with its output streamed shows the daemon still reaches the runner.
      expect(fenced.final.status).toBe(RunStatus.COMPLETED);
      expect(fenced.out).toEqual(targets.map(([label]) => `${label}: BLOCKED`));
      expect(fenced.system.join("\n")).not.toMatch(/isolation is not enforced/);
      expect(listener.connections()).toBe(0);

      await daemon.runs.cancelRun({ runId: neighbour.id });
      await watchToEnd(daemon, neighbour.id, 120_000);
      const gateway = execFileSync("docker", ["network", "inspect", `paddock-open-${instance}`, "-f", "{{(index .IPAM.Config 0).Gateway}}"], { encoding: "utf8" }).trim();
      await daemon.app.stop();
      const dataDir = daemon.dataDir;
      daemon = undefined;

      // The same daemon restarted with the gateway allowed: the fence is rebuilt with it.
      daemon = await startDaemon({ dataDir, config: { sandboxAllowCidrs: gateway } });
      const allowed = await runProbe(daemon, repo, probe([["gateway", "GATEWAY", listener.port], ...(bridge ? [["docker0", bridge, listener.port] as [string, string, number]] : [])]));
      expect(allowed.final.status).toBe(RunStatus.COMPLETED);
      expect(allowed.out).toEqual(["gateway: REACHED", ...(bridge ? ["docker0: BLOCKED"] : [])]);
      await vi.waitFor(() => expect(listener.connections()).toBe(1), { timeout: 5_000 });

      await cleanUp(daemon);
      daemon = undefined;
      expect(execFileSync("iptables", ["-S"], { encoding: "utf8" })).not.toContain(`PADDOCK-${instance.slice(0, 12)}`);
      expect(execFileSync("docker", ["network", "ls", "-q", "--filter", `name=paddock-open-${instance}`], { encoding: "utf8" }).trim()).toBe("");
    } finally {
      listener.server.close();
      if (daemon) await cleanUp(daemon);
    }
  });

  test("without iptables, unrestricted runs still work and say that host isolation is not enforced", async ({ repo }) => {
    const path = process.env.PATH;
    // iptables lives in /usr/sbin; git, tar and docker do not.
    process.env.PATH = (path ?? "").split(":").filter((p) => !p.endsWith("/sbin")).join(":");
    let daemon: Daemon | undefined;
    try {
      daemon = await startDaemon();
      expect(daemon.logs.some((l) => (JSON.parse(l) as { level: number; msg: string }).level === 40 && /host isolation is not enforced.*iptables is not installed/.test(l))).toBe(true);
      const { final, out, system } = await runProbe(daemon, repo, ["sh", "-c", "echo still runs"]);
      expect(final.status).toBe(RunStatus.COMPLETED);
      expect(out).toEqual(["still runs"]);
      expect(system).toContainEqual(expect.stringMatching(/^host isolation is not enforced: .*iptables is not installed/));
    } finally {
      process.env.PATH = path;
      if (daemon) await cleanUp(daemon);
    }
  });
});
