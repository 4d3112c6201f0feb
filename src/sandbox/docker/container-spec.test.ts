import { describe, expect, it } from "vitest";
import { readRunnerEnvironment } from "../../agent/runner-env.js";
import { containerSpec, poolContainerSpec } from "./container-spec.js";

describe("containerSpec", () => {
  const spec = {
    runId: "run_1",
    name: "paddock-run_1-1",
    repositoryUrl: "/srv/repo",
    branch: "main",
    resultBranch: "paddock/run_1",
    agentCommand: ["sh", "-c", "echo 'hi there'"],
    prompt: "Fix it\n\nplease",
    publicKeyPem: "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n",
    token: "tok",
    limits: {},
    logBudget: { maxBytes: 2048, maxLines: 100 },
    network: null,
  };
  const c = containerSpec(spec, { image: "img:1", instanceId: "inst", source: "/data/repos/x.git", limits: { cpus: 1.5, memoryBytes: 512 * 1024 ** 2, pids: 256, runtime: "runc" } });

  it("names, labels and limits the container for the reaper and the operator", () => {
    expect(c.name).toBe("paddock-run_1-1");
    expect(c.Image).toBe("img:1");
    expect(c.Labels).toEqual({ "paddock.instance": "inst", "paddock.run": "run_1", "paddock.sandbox": "paddock-run_1-1" });
    expect(c.HostConfig).toMatchObject({ NanoCpus: 1_500_000_000, Memory: 536_870_912, PidsLimit: 256, Runtime: "runc", AutoRemove: false });
    expect(c.HostConfig?.RestartPolicy).toEqual({ Name: "no" });
  });

  it("mounts only the repository, read-only, and passes the run to the runner through its environment", () => {
    expect(c.HostConfig?.Binds).toEqual(["/data/repos/x.git:/paddock/source:ro"]);
    const env = Object.fromEntries(c.Env!.map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
    expect(env).toMatchObject({
      PADDOCK_RUN_ID: "run_1",
      PADDOCK_BRANCH: "main",
      PADDOCK_RESULT_BRANCH: "paddock/run_1",
      PADDOCK_PROMPT: "Fix it\n\nplease",
      PADDOCK_HOLD: "1",
      JWT_PUBLIC_KEY: spec.publicKeyPem,
      PADDOCK_LOG_MAX_LINES: "100",
    });
    expect(JSON.parse(env.PADDOCK_AGENT_COMMAND!)).toEqual(spec.agentCommand);
    // No credential in the container's config: `docker inspect` must not hand one out.
    expect(Object.values(env).join("\n")).not.toContain("tok");
    expect(Object.keys(env).filter((k) => /TOKEN/.test(k))).toEqual([]);
  });

  it("is read back by the runner through the one contract, and the agent runs as uid 1000", () => {
    const settings = readRunnerEnvironment(Object.fromEntries(c.Env!.map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)])));
    expect(settings).toMatchObject({ PADDOCK_RUN_ID: "run_1", PADDOCK_AGENT_UID: 1000, PADDOCK_AGENT_GID: 1000, PADDOCK_AGENT_COMMAND: spec.agentCommand, PADDOCK_LOG_MAX_BYTES: 2048 });
  });

  it("makes a pool member the same container as a run's of its key, with nothing of any run in it", () => {
    const limits = { cpus: 1.5, memoryBytes: 512 * 1024 ** 2, pids: 256, runtime: "runc" };
    const m = poolContainerSpec({ name: "paddock-pool-ab", key: "k1", claimHash: "f".repeat(64), image: "img:1", instanceId: "inst", source: "/data/repos/x.git", limits, networkMode: "paddock-open-inst" });
    const run = containerSpec(spec, { image: "img:1", instanceId: "inst", source: "/data/repos/x.git", limits, networkMode: "paddock-open-inst" });
    expect(m.HostConfig).toEqual(run.HostConfig);
    expect(m.Labels).toEqual({ "paddock.instance": "inst", "paddock.pool": "k1", "paddock.run": "", "paddock.sandbox": "" });
    const env = Object.fromEntries(m.Env!.map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
    // The run's variables are blank (a snapshot's image carries an earlier run's); the claim's hash is there.
    for (const k of ["PADDOCK_RUN_ID", "PADDOCK_RESULT_BRANCH", "PADDOCK_PROMPT", "PADDOCK_AGENT_COMMAND", "JWT_PUBLIC_KEY"]) expect(env[k]).toBe("");
    expect(env.PADDOCK_POOL_CLAIM).toBe("f".repeat(64));
    expect(env.PADDOCK_SOURCE).toBe("/paddock/source");
  });
});
