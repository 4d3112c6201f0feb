import { describe, expect, it } from "vitest";
import { readRunnerEnvironment, RunnerEnvError, RunnerEnvSchema } from "./runner-env.js";

const PEM = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n";
const good = {
  PADDOCK_RUN_ID: "run_abc1",
  PADDOCK_WORKDIR: "/workspace",
  PADDOCK_STATE_DIR: "/paddock/state",
  PADDOCK_RESULT_BRANCH: "paddock/run_abc1",
  PADDOCK_AGENT_COMMAND: '["sh","-c","true"]',
  PADDOCK_AGENT_HOME: "/paddock/home",
  JWT_PUBLIC_KEY: PEM,
};

describe("the runner's environment", () => {
  it("fills defaults, reads numbers and the argv, and drops what it does not know", () => {
    const s = readRunnerEnvironment({ ...good, PADDOCK_RUNNER_PORT: "8080", PADDOCK_AGENT_UID: "1000", PADDOCK_AGENT_GID: "1000", OTHER: "x" });
    expect(s).toEqual({
      ...good,
      PADDOCK_AGENT_COMMAND: ["sh", "-c", "true"],
      PADDOCK_RUNNER_HOST: "0.0.0.0",
      PADDOCK_RUNNER_PORT: 8080,
      PADDOCK_SOURCE: "",
      PADDOCK_IMPORT: "0",
      PADDOCK_OTHER_STATES: "keep",
      PADDOCK_BRANCH: "",
      PADDOCK_AGENT_KIND: "command",
      PADDOCK_RUN_MODE: "background",
      PADDOCK_PERMISSION_POLICY: "auto_allow",
      PADDOCK_PERMISSION_TIMEOUT_MS: 600_000,
      PADDOCK_PROMPT: "",
      PADDOCK_HANDOFF: "",
      PADDOCK_GRACE_MS: 10_000,
      PADDOCK_HOLD: "1",
      PADDOCK_IDLE_EXIT_MS: 3_600_000,
      PADDOCK_LOG_MAX_BYTES: 1024 ** 3,
      PADDOCK_LOG_MAX_LINES: 10_000_000,
      PADDOCK_AGENT_UID: 1000,
      PADDOCK_AGENT_GID: 1000,
      PADDOCK_AGENT_ENV_PASS: "",
      PADDOCK_AGENT_PATH: "/usr/local/bin:/usr/bin:/bin",
      PADDOCK_POOL_CLAIM: "",
    });
    expect(readRunnerEnvironment(good).PADDOCK_AGENT_UID).toBeUndefined();
  });

  it("names every bad variable, one line each, with what is wrong", () => {
    let error: unknown;
    try {
      readRunnerEnvironment({
        ...good,
        PADDOCK_RUN_ID: "nope",
        PADDOCK_RUNNER_PORT: "70000",
        PADDOCK_AGENT_COMMAND: "[]",
        PADDOCK_AGENT_KIND: "robot",
        JWT_PUBLIC_KEY: "x",
        PADDOCK_WORKDIR: "",
        PADDOCK_AGENT_HOME: undefined,
      });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(RunnerEnvError);
    expect((error as Error).message).toBe(
      [
        "paddock agent: bad environment (the daemon sets it when it starts a sandbox):",
        "  PADDOCK_RUN_ID: is not a run id",
        '  PADDOCK_RUNNER_PORT: must be a whole number from 0 to 65535, not "70000"',
        "  PADDOCK_WORKDIR: must not be empty",
        "  PADDOCK_AGENT_COMMAND: must be a non-empty JSON array of strings",
        '  PADDOCK_AGENT_KIND: must be one of "command", "acp", not "robot"',
        "  PADDOCK_AGENT_HOME: is required",
        "  JWT_PUBLIC_KEY: is not a PEM public key",
      ].join("\n"),
    );
    expect(() => readRunnerEnvironment({ ...good, PADDOCK_AGENT_UID: "1000" })).toThrow("PADDOCK_AGENT_UID and PADDOCK_AGENT_GID go together");
  });

  it("reads a few variables alone (a warm pool's runner before its claim)", () => {
    const place = RunnerEnvSchema.pick({ PADDOCK_RUNNER_PORT: true, PADDOCK_STATE_DIR: true, PADDOCK_POOL_CLAIM: true });
    expect(place.parse({ PADDOCK_STATE_DIR: "/s" })).toEqual({ PADDOCK_RUNNER_PORT: 47821, PADDOCK_STATE_DIR: "/s", PADDOCK_POOL_CLAIM: "" });
    expect(() => place.parse({ PADDOCK_STATE_DIR: "/s", PADDOCK_POOL_CLAIM: "zz" })).toThrow("PADDOCK_POOL_CLAIM: is not a SHA-256 in hex");
    expect(place.safeParse({}).success).toBe(false);
  });
});
