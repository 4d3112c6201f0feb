import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { execFileSync } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { beforeAll, describe, expect } from "vitest";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { EXIT } from "../src/cli/commands.js";
import type { DockerProvider } from "../src/sandbox/docker/docker-provider.js";
import { allLogs, bearer, buildSandboxImage, cleanUp, cliIn, dockerAvailable, instanceOf, startDaemon, test, watchToEnd } from "./fixtures.js";

/**
 * An environment's own warm pool (warm_pool) against a real engine and daemon: validated,
 * its members made as soon as it is saved — for each repository it lists, before any run
 * and with the daemon's --warm-pool off — and the first run of it takes one.
 * PADDOCK_TEST_IMAGE names an image of this checkout's runner.
 */
const IMAGE = process.env.PADDOCK_TEST_IMAGE || "paddock-sandbox:latest";
const docker = (...args: string[]) => execFileSync("docker", args, { encoding: "utf8" }).trim();
const members = (instance: string) =>
  docker("ps", "-a", "--format", "{{.Names}}", "--filter", `label=paddock.instance=${instance}`, "--filter", "label=paddock.pool")
    .split("\n")
    .filter((n) => n.startsWith("paddock-pool-"))
    .sort();

describe.runIf(dockerAvailable())("an environment's warm pool", () => {
  beforeAll(buildSandboxImage, 600_000);

  test("env create/update --warm-pool: set, shown, changed; a bad value is refused by the CLI or the daemon, naming the flag or field", async () => {
    const d = await startDaemon({ config: { dockerImage: IMAGE } });
    try {
      const notNumber = await cliIn(d, ["env", "create", "--name", "w0", "--network", "full", "--warm-pool", "two"]);
      expect(notNumber.code).toBe(EXIT.usage);
      expect(notNumber.err).toMatch(/--warm-pool: "two" is not a number of sandboxes/);
      const tooMany = await cliIn(d, ["env", "create", "--name", "w1", "--network", "full", "--warm-pool", "9"]);
      expect(tooMany.code).not.toBe(EXIT.ok);
      expect(tooMany.err).toMatch(/environment\.warm_pool: at most 8 sandboxes per repository, not 9/);
      const made = await cliIn(d, ["env", "create", "--name", "w2", "--network", "full", "--warm-pool", "1"]);
      expect(made.code).toBe(EXIT.ok);
      expect(made.out).toContain("warm pool: 1 per repository");
      const id = /environment (env_\S+)/.exec(made.out)![1]!;
      const changed = await cliIn(d, ["env", "update", id, "--warm-pool", "3"]);
      expect(changed.out).toContain("warm pool: 3 per repository");
      const off = await cliIn(d, ["env", "update", id, "--warm-pool", "0"]);
      expect(off.out).not.toContain("warm pool");
    } finally {
      await cleanUp(d);
    }
  });

  test("is made when the environment is saved, before any run, and its first run takes a member", async ({ repo }) => {
    const d = await startDaemon({ config: { dockerImage: IMAGE } }); // the daemon's own pool is off
    try {
      const instance = instanceOf(d.dataDir);
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(d.adminToken)] }));
      const refused = await envs.createEnvironment({ environment: { name: "big", networkAccess: NetworkAccess.FULL, warmPool: 9 } }).then(() => null, (e: Error) => e);
      expect(refused?.message).toMatch(/environment\.warm_pool: at most 8 sandboxes per repository, not 9/);
      const env = (await envs.createEnvironment({ environment: { name: "warm", networkAccess: NetworkAccess.FULL, warmPool: 2, repositories: [repo] } })).environment!;
      expect(env.warmPool).toBe(2);
      // Made with no run having asked: two members of the environment's key.
      for (let i = 0; i < 2400 && members(instance).length < 2; i++) await sleep(50);
      const made = members(instance);
      expect(made).toHaveLength(2);
      await (d.app.providers.get("docker") as DockerProvider).pool.settled(); // made and answering, not only created

      const { task } = await d.tasks.createTask({ title: "warm first", repository: repo, environmentId: env.id });
      const run = (await d.runs.startRun({ taskId: task!.id, provider: "docker", agentCommand: ["git", "rev-parse", "--abbrev-ref", "HEAD"] })).run!;
      const final = (await watchToEnd(d, run.id, 180_000)).pop()!;
      expect(final).toMatchObject({ status: RunStatus.COMPLETED, exitCode: 0 });
      const logs = await allLogs(d, run.id);
      const took = logs.find((l) => l.stream === "system" && l.text.startsWith("took the warm sandbox"))?.text ?? "";
      expect(made.some((m) => took.startsWith(`took the warm sandbox ${m} as paddock-${run.id}-1`))).toBe(true);
      expect(logs.filter((l) => l.stream === "stdout").map((l) => l.text)).toEqual([`paddock/${run.id}`]);

      // A smaller warm_pool removes the members past it at once, not at the key's next run;
      // removing the environment removes the rest.
      const until = async (n: number) => {
        for (let i = 0; i < 2400 && members(instance).length !== n; i++) await sleep(50);
        return members(instance).length;
      };
      expect(await until(2)).toBe(2); // refilled after the claim
      await envs.updateEnvironment({ environment: { ...env, warmPool: 1 } });
      expect(await until(1)).toBe(1);
      await envs.deleteEnvironment({ environmentId: env.id });
      expect(await until(0)).toBe(0);
    } finally {
      await cleanUp(d);
    }
  });
});
