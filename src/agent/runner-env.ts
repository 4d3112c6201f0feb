import { join } from "node:path";
import { z } from "zod";

/**
 * The one contract between the daemon and `paddock agent`: the environment a provider
 * starts the runner with. Providers build it with runnerEnvironment(); the runner reads it
 * with readRunnerEnvironment(). The agent's own environment is a different thing, built
 * from an allowlist by agentEnvironment() — nothing here leaks into it by default.
 */
const jsonArgv = z.string().transform((v, ctx) => {
  try {
    const argv: unknown = JSON.parse(v);
    if (Array.isArray(argv) && argv.length > 0 && argv.every((a) => typeof a === "string")) return argv as string[];
  } catch {
    /* reported below */
  }
  ctx.addIssue({ code: "custom", message: "must be a non-empty JSON array of strings" });
  return z.NEVER;
});

const id = z.coerce.number().int().min(0).max(4_294_967_294);

export const RunnerEnvSchema = z.object({
  PADDOCK_RUN_ID: z.string().regex(/^run_[a-z0-9]+$/, "is not a run id"),
  PADDOCK_RUNNER_HOST: z.string().min(1).default("0.0.0.0"),
  PADDOCK_RUNNER_PORT: z.coerce.number().int().min(0).max(65535).default(47821),
  /** The checked-out repository; the agent's working directory. */
  PADDOCK_WORKDIR: z.string().min(1),
  /** The runner's own files (events, runner.json): never readable by the agent. */
  PADDOCK_STATE_DIR: z.string().min(1),
  /** A git repository to clone into the workdir before the runner listens; "" for none. */
  PADDOCK_SOURCE: z.string().default(""),
  /** "1": the repository arrives as a git bundle pushed to POST /import (no mounts: modal); /start waits for it. */
  PADDOCK_IMPORT: z.enum(["0", "1"]).default("0"),
  PADDOCK_BRANCH: z.string().default(""),
  PADDOCK_RESULT_BRANCH: z.string().min(1),
  /** The agent's argv: a command (prompt on stdin), or for kind acp an agent speaking ACP over stdio. */
  PADDOCK_AGENT_COMMAND: jsonArgv,
  /** command: stdout/stderr lines; acp: the runner is the agent's ACP client. */
  PADDOCK_AGENT_KIND: z.enum(["command", "acp"]).default("command"),
  /** ACP agents: background ends with the first turn; interactive waits for POST /prompt. */
  PADDOCK_RUN_MODE: z.enum(["background", "interactive"]).default("background"),
  /** ACP agents: what happens to a permission request (ask: parked until POST /permission or the timeout). */
  PADDOCK_PERMISSION_POLICY: z.enum(["auto_allow", "ask", "deny"]).default("auto_allow"),
  /** How long an asked permission request waits for an answer before it is rejected. */
  PADDOCK_PERMISSION_TIMEOUT_MS: z.coerce.number().int().min(1).default(600_000),
  PADDOCK_PROMPT: z.string().default(""),
  /** A run started from a handoff: JSON HandoffStart (runner-protocol.ts); "" for none. */
  PADDOCK_HANDOFF: z.string().default(""),
  PADDOCK_GRACE_MS: z.coerce.number().int().min(0).default(10_000),
  /** "1": wait for POST /start before starting anything (the daemon may snapshot first). */
  PADDOCK_HOLD: z.enum(["0", "1"]).default("1"),
  PADDOCK_IDLE_EXIT_MS: z.coerce.number().int().min(1000).default(3_600_000),
  /** The run's log budget: past either, lines are counted and dropped, with a note saying how many. */
  PADDOCK_LOG_MAX_BYTES: z.coerce.number().int().min(1024).default(1024 ** 3),
  PADDOCK_LOG_MAX_LINES: z.coerce.number().int().min(10).default(10_000_000),
  /** The agent's user; unset: the runner's own (a daemon that is not root). */
  PADDOCK_AGENT_UID: id.optional(),
  PADDOCK_AGENT_GID: id.optional(),
  /**
   * Names of the runner's variables the agent also gets, comma-separated: set by a sandbox
   * image for the agents it carries (e.g. CLAUDE_CODE_EXECUTABLE), never by the agent.
   */
  PADDOCK_AGENT_ENV_PASS: z.string().default(""),
  /** The agent's HOME, owned by the agent's user. */
  PADDOCK_AGENT_HOME: z.string().min(1),
  /** PATH the agent gets. */
  PADDOCK_AGENT_PATH: z.string().default("/usr/local/bin:/usr/bin:/bin"),
  JWT_PUBLIC_KEY: z.string().includes("BEGIN PUBLIC KEY", { message: "is not a PEM public key" }),
  /**
   * A warm pool's runner: the SHA-256 (hex) of the secret only the daemon that made it
   * holds. It waits for POST /claim with that secret, which brings the run's variables
   * (RUN_VARIABLES); "" for a runner started for its run.
   */
  PADDOCK_POOL_CLAIM: z.string().regex(/^([0-9a-f]{64})?$/, "is not a SHA-256 in hex").default(""),
});

/**
 * The variables a run brings: a warm pool's runner starts without them (it has no run yet)
 * and receives them with its claim; every other runner starts with them.
 */
export const RUN_VARIABLES = [
  "PADDOCK_RUN_ID",
  "PADDOCK_BRANCH",
  "PADDOCK_RESULT_BRANCH",
  "PADDOCK_AGENT_COMMAND",
  "PADDOCK_AGENT_KIND",
  "PADDOCK_RUN_MODE",
  "PADDOCK_PERMISSION_POLICY",
  "PADDOCK_PROMPT",
  "PADDOCK_HOLD",
  "PADDOCK_LOG_MAX_BYTES",
  "PADDOCK_LOG_MAX_LINES",
  "PADDOCK_HANDOFF",
  "JWT_PUBLIC_KEY",
] as const satisfies readonly (keyof RunnerEnv)[];
export type RunVariable = (typeof RUN_VARIABLES)[number];

export type RunnerEnv = z.input<typeof RunnerEnvSchema>;
export type RunnerSettings = z.output<typeof RunnerEnvSchema>;

/** What a provider knows when it starts a runner; the result is the runner's whole environment. */
export function runnerEnvironment(s: RunnerEnv): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(s)) if (v !== undefined) env[k] = String(v);
  return env;
}

export class RunnerEnvError extends Error {
  override name = "RunnerEnvError";
}

/** Parses the runner's environment; the error names each bad variable. */
export function readRunnerEnvironment(env: Record<string, string | undefined>): RunnerSettings {
  const parsed = RunnerEnvSchema.safeParse(env);
  if (parsed.success) {
    const s = parsed.data;
    if ((s.PADDOCK_AGENT_UID === undefined) !== (s.PADDOCK_AGENT_GID === undefined)) {
      throw new RunnerEnvError("paddock agent: PADDOCK_AGENT_UID and PADDOCK_AGENT_GID go together");
    }
    return s;
  }
  const lines = parsed.error.issues.map((i) => `${String(i.path[0])}: ${i.message}`);
  throw new RunnerEnvError(`paddock agent: bad environment (the daemon sets it when it starts a sandbox):\n  ${lines.join("\n  ")}`);
}

/** Variables of the runner's own environment an agent may see; everything else stays out. */
const PASSED_THROUGH = new Set(["LANG", "LANGUAGE", "TZ", "TERM"]);
const PASSED_PREFIXES = ["LC_"];

/**
 * Where Claude Code and Codex keep their settings and conversations: under the agent's
 * HOME, which lives in the run's state, so a conversation survives restarts and travels.
 */
export function agentConfigDirs(home: string): { CLAUDE_CONFIG_DIR: string; CODEX_HOME: string } {
  return { CLAUDE_CONFIG_DIR: join(home, ".claude"), CODEX_HOME: join(home, ".codex") };
}

/**
 * The agent's environment, built up from an allowlist (never by stripping the runner's):
 * locale and terminal settings, a fixed PATH and HOME, the agents' config dirs under HOME,
 * IS_SANDBOX (Claude Code offers its permission bypass as root only with it), the run's id
 * and prompt, and what the daemon hands over at start (the environment's variables and
 * secrets, proxy settings).
 */
export function agentEnvironment(
  runner: Record<string, string | undefined>,
  s: Pick<RunnerSettings, "PADDOCK_RUN_ID" | "PADDOCK_PROMPT" | "PADDOCK_AGENT_HOME" | "PADDOCK_AGENT_PATH"> & Partial<Pick<RunnerSettings, "PADDOCK_AGENT_ENV_PASS">>,
  extra: Record<string, string> = {},
): Record<string, string> {
  const env: Record<string, string> = {};
  const named = new Set((s.PADDOCK_AGENT_ENV_PASS ?? "").split(",").map((n) => n.trim()).filter((n) => n && !n.startsWith("PADDOCK_") && n !== "JWT_PUBLIC_KEY"));
  for (const [k, v] of Object.entries(runner)) {
    if (v !== undefined && (PASSED_THROUGH.has(k) || named.has(k) || PASSED_PREFIXES.some((p) => k.startsWith(p)))) env[k] = v;
  }
  Object.assign(env, {
    PATH: s.PADDOCK_AGENT_PATH,
    HOME: s.PADDOCK_AGENT_HOME,
    ...agentConfigDirs(s.PADDOCK_AGENT_HOME),
    IS_SANDBOX: "1",
    PADDOCK_RUN_ID: s.PADDOCK_RUN_ID,
    PADDOCK_PROMPT: s.PADDOCK_PROMPT,
  });
  return { ...env, ...extra };
}
