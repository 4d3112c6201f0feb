import { describe, expect, it } from "vitest";
import { readRunnerEnvironment, RUN_VARIABLES, runnerEnvironment, type RunnerEnv } from "../agent/runner-env.js";
import { runnerEnvOfRun } from "./provider.js";

const placement = { PADDOCK_WORKDIR: "/workspace", PADDOCK_STATE_DIR: "/paddock/state", PADDOCK_AGENT_HOME: "/home/agent" };
const pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";

describe("a run's runner variables", () => {
  it("sets every one, to the runner's default where the run has none: an image's leftovers (a snapshot keeps its run's) never count", () => {
    const env = runnerEnvironment(runnerEnvOfRun({ runId: "run_b", branch: "", resultBranch: "paddock/run_b", agentCommand: ["true"], prompt: "", publicKeyPem: pem }) as RunnerEnv);
    expect(Object.keys(env).sort()).toEqual([...RUN_VARIABLES].sort());
    // What the image of an ACP handoff run would hold, overridden key by key as docker does.
    const leftovers = { PADDOCK_AGENT_KIND: "acp", PADDOCK_RUN_MODE: "interactive", PADDOCK_PERMISSION_POLICY: "deny", PADDOCK_LOG_MAX_BYTES: "2048", PADDOCK_LOG_MAX_LINES: "20", PADDOCK_HANDOFF: '{"head":"x"}' };
    const inherited = readRunnerEnvironment({ ...placement, ...leftovers, ...env });
    const fresh = readRunnerEnvironment({ ...placement, ...Object.fromEntries(Object.entries(env).filter(([k]) => !(k in leftovers))) });
    expect(inherited).toEqual(fresh);
    expect(fresh).toMatchObject({ PADDOCK_AGENT_KIND: "command", PADDOCK_RUN_MODE: "background", PADDOCK_PERMISSION_POLICY: "auto_allow", PADDOCK_HANDOFF: "" });
  });
});
