import { join } from "node:path";

/**
 * The one contract between the daemon and `paddock agent`: the environment a provider
 * starts the runner with. Providers build it with runnerEnvironment(); the runner reads it
 * with readRunnerEnvironment(). The agent's own environment is a different thing, built
 * from an allowlist by agentEnvironment() — nothing here leaks into it by default.
 *
 * Checked by hand, not with a schema library: every runner start reads these few
 * variables, and loading zod for them cost `paddock agent` a large share of its start-up.
 */

/** How one variable is read: its rule, and what it is when unset (absent: required). */
type Rule =
  | { type: "string"; nonEmpty?: boolean; pattern?: [RegExp, string]; includes?: [string, string]; default?: string }
  | { type: "int"; min: number; max?: number; default?: number; optional?: true }
  | { type: "enum"; values: readonly string[]; default: string }
  | { type: "argv" };

const RULES = {
  PADDOCK_RUN_ID: { type: "string", pattern: [/^run_[a-z0-9]+$/, "is not a run id"] },
  PADDOCK_RUNNER_HOST: { type: "string", nonEmpty: true, default: "0.0.0.0" },
  PADDOCK_RUNNER_PORT: { type: "int", min: 0, max: 65535, default: 47821 },
  /** The checked-out repository; the agent's working directory. */
  PADDOCK_WORKDIR: { type: "string", nonEmpty: true },
  /** The runner's own files (events, runner.json): never readable by the agent. */
  PADDOCK_STATE_DIR: { type: "string", nonEmpty: true },
  /** A git repository to clone into the workdir before the runner listens; "" for none. */
  PADDOCK_SOURCE: { type: "string", default: "" },
  /** "1": the repository arrives as a git bundle pushed to POST /import (no mounts: modal); /start waits for it. */
  PADDOCK_IMPORT: { type: "enum", values: ["0", "1"], default: "0" },
  /** "drop": entries beside PADDOCK_STATE_DIR are other runs' state (a Modal snapshot's), removed at start. */
  PADDOCK_OTHER_STATES: { type: "enum", values: ["keep", "drop"], default: "keep" },
  PADDOCK_BRANCH: { type: "string", default: "" },
  PADDOCK_RESULT_BRANCH: { type: "string", nonEmpty: true },
  /** The agent's argv: a command (prompt on stdin), or for kind acp an agent speaking ACP over stdio. */
  PADDOCK_AGENT_COMMAND: { type: "argv" },
  /** command: stdout/stderr lines; acp: the runner is the agent's ACP client. */
  PADDOCK_AGENT_KIND: { type: "enum", values: ["command", "acp"], default: "command" },
  /** ACP agents: background ends with the first turn; interactive waits for POST /prompt. */
  PADDOCK_RUN_MODE: { type: "enum", values: ["background", "interactive"], default: "background" },
  /** ACP agents: what happens to a permission request (ask: parked until POST /permission or the timeout). */
  PADDOCK_PERMISSION_POLICY: { type: "enum", values: ["auto_allow", "ask", "deny"], default: "auto_allow" },
  /** How long an asked permission request waits for an answer before it is rejected. */
  PADDOCK_PERMISSION_TIMEOUT_MS: { type: "int", min: 1, default: 600_000 },
  PADDOCK_PROMPT: { type: "string", default: "" },
  /** A run started from a handoff: JSON HandoffStart (runner-protocol.ts); "" for none. */
  PADDOCK_HANDOFF: { type: "string", default: "" },
  PADDOCK_GRACE_MS: { type: "int", min: 0, default: 10_000 },
  /** "1": wait for POST /start before starting anything (the daemon may snapshot first). */
  PADDOCK_HOLD: { type: "enum", values: ["0", "1"], default: "1" },
  PADDOCK_IDLE_EXIT_MS: { type: "int", min: 1000, default: 3_600_000 },
  /** The run's log budget: past either, lines are counted and dropped, with a note saying how many. */
  PADDOCK_LOG_MAX_BYTES: { type: "int", min: 1024, default: 1024 ** 3 },
  PADDOCK_LOG_MAX_LINES: { type: "int", min: 10, default: 10_000_000 },
  /** The agent's user; unset: the runner's own (a daemon that is not root). */
  PADDOCK_AGENT_UID: { type: "int", min: 0, max: 4_294_967_294, optional: true },
  PADDOCK_AGENT_GID: { type: "int", min: 0, max: 4_294_967_294, optional: true },
  /**
   * Names of the runner's variables the agent also gets, comma-separated: set by a sandbox
   * image for the agents it carries (e.g. CLAUDE_CODE_EXECUTABLE), never by the agent.
   */
  PADDOCK_AGENT_ENV_PASS: { type: "string", default: "" },
  /** The agent's HOME, owned by the agent's user. */
  PADDOCK_AGENT_HOME: { type: "string", nonEmpty: true },
  /** PATH the agent gets. */
  PADDOCK_AGENT_PATH: { type: "string", default: "/usr/local/bin:/usr/bin:/bin" },
  JWT_PUBLIC_KEY: { type: "string", includes: ["BEGIN PUBLIC KEY", "is not a PEM public key"] },
  /**
   * A warm pool's runner: the SHA-256 (hex) of the secret only the daemon that made it
   * holds. It waits for POST /claim with that secret, which brings the run's variables
   * (RUN_VARIABLES); "" for a runner started for its run.
   */
  PADDOCK_POOL_CLAIM: { type: "string", pattern: [/^([0-9a-f]{64})?$/, "is not a SHA-256 in hex"], default: "" },
  /**
   * A pipe the provider that spawned the runner reads (the local provider): the runner
   * writes one line of JSON RunnerInfo to it once it listens, then closes it, so the daemon
   * needs no poll. Unset: none (containers; the daemon reads runner.json or polls).
   */
  PADDOCK_READY_FD: { type: "int", min: 3, max: 1023, optional: true },
  /**
   * A pipe from the provider that spawned the runner (the local provider): it clones
   * PADDOCK_SOURCE into PADDOCK_WORKDIR (no work tree) while the runner starts, then writes
   * "ok", or why the clone failed, and closes the pipe. The runner checks out from that
   * clone instead of cloning. Unset: the runner clones (or fetches) itself.
   */
  PADDOCK_CLONED_FD: { type: "int", min: 3, max: 1023, optional: true },
} as const satisfies Record<string, Rule>;

type Rules = typeof RULES;
type Value<R> = R extends { type: "int" } ? number : R extends { type: "argv" } ? string[] : R extends { type: "enum"; values: readonly (infer V)[] } ? V : string;
type Optional<R> = R extends { optional: true } ? true : false;

/** The runner's settings, read: defaults filled in, numbers as numbers, the argv parsed. */
export type RunnerSettings = { [K in keyof Rules as Optional<Rules[K]> extends true ? never : K]: Value<Rules[K]> } & {
  [K in keyof Rules as Optional<Rules[K]> extends true ? K : never]?: Value<Rules[K]> | undefined;
};

/** What a provider sets: a variable with a default may be left out; numbers as numbers or strings. */
export type RunnerEnv = { [K in keyof Rules as Rules[K] extends { default: unknown } | { optional: true } ? never : K]: RunnerInput<Rules[K]> } & {
  [K in keyof Rules as Rules[K] extends { default: unknown } | { optional: true } ? K : never]?: RunnerInput<Rules[K]> | undefined;
};
type RunnerInput<R> = R extends { type: "int" } ? number | string : R extends { type: "argv" } ? string : Value<R>;

/** One variable: its value, or why not (the message follows the variable's name). */
function readOne(rule: Rule, raw: string | undefined): { value: unknown } | { error: string } {
  if (raw === undefined) {
    if ("default" in rule && rule.default !== undefined) return { value: rule.default };
    if (rule.type === "int" && rule.optional) return { value: undefined };
    return { error: "is required" };
  }
  switch (rule.type) {
    case "string":
      if (rule.nonEmpty && raw === "") return { error: "must not be empty" };
      if (rule.pattern && !rule.pattern[0].test(raw)) return { error: rule.pattern[1] };
      if (rule.includes && !raw.includes(rule.includes[0])) return { error: rule.includes[1] };
      return { value: raw };
    case "int": {
      // As Number() reads it (surrounding blanks allowed; "" is 0), then whole and in range.
      const n = Number(raw);
      const range = rule.max === undefined ? `at least ${rule.min}` : `from ${rule.min} to ${rule.max}`;
      if (!Number.isInteger(n) || n < rule.min || (rule.max !== undefined && n > rule.max)) return { error: `must be a whole number ${range}, not ${JSON.stringify(raw)}` };
      return { value: n };
    }
    case "enum":
      return rule.values.includes(raw) ? { value: raw } : { error: `must be one of ${rule.values.map((v) => JSON.stringify(v)).join(", ")}, not ${JSON.stringify(raw)}` };
    case "argv":
      try {
        const argv: unknown = JSON.parse(raw);
        if (Array.isArray(argv) && argv.length > 0 && argv.every((a) => typeof a === "string")) return { value: argv };
      } catch {
        /* reported below */
      }
      return { error: "must be a non-empty JSON array of strings" };
    default:
      return assertNever(rule);
  }
}

function assertNever(x: never): never {
  throw new Error(`unexpected rule ${JSON.stringify(x)}`);
}

/** Reads `names` of the environment (all of them when absent); each problem is one "NAME: why" line. */
function readVariables(env: Record<string, string | undefined>, names: readonly (keyof Rules)[]): { data: Record<string, unknown>; problems: string[] } {
  const data: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const name of names) {
    const r = readOne(RULES[name], env[name]);
    if ("error" in r) problems.push(`${name}: ${r.error}`);
    else if (r.value !== undefined) data[name] = r.value;
  }
  return { data, problems };
}

/**
 * A few of the runner's variables, read by the same rules (a warm pool's runner has no run
 * yet, so only its placement is there): `pick({ NAME: true, … })`, then parse (throws) or
 * safeParse.
 */
export const RunnerEnvSchema = {
  pick<K extends keyof Rules>(mask: { [P in K]: true }) {
    const names = Object.keys(mask) as K[];
    const read = (env: Record<string, string | undefined>) => readVariables(env, names);
    return {
      parse(env: Record<string, string | undefined>): Pick<RunnerSettings, K & keyof RunnerSettings> & Pick<Partial<RunnerSettings>, K> {
        const { data, problems } = read(env);
        if (problems.length > 0) throw badEnvironment(problems);
        return data as Pick<RunnerSettings, K & keyof RunnerSettings>;
      },
      safeParse(env: Record<string, string | undefined>): { success: true; data: Pick<RunnerSettings, K & keyof RunnerSettings> } | { success: false; error: RunnerEnvError } {
        const { data, problems } = read(env);
        return problems.length > 0 ? { success: false, error: badEnvironment(problems) } : { success: true, data: data as Pick<RunnerSettings, K & keyof RunnerSettings> };
      },
    };
  },
};

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

/** What a provider knows when it starts a runner; the result is the runner's whole environment. */
export function runnerEnvironment(s: RunnerEnv): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(s)) if (v !== undefined) env[k] = String(v);
  return env;
}

export class RunnerEnvError extends Error {
  override name = "RunnerEnvError";
}

/** The error for bad variables, one line each, naming the variable. */
function badEnvironment(problems: string[]): RunnerEnvError {
  return new RunnerEnvError(`paddock agent: bad environment (the daemon sets it when it starts a sandbox):\n  ${problems.join("\n  ")}`);
}

/** Parses the runner's environment; the error names each bad variable. */
export function readRunnerEnvironment(env: Record<string, string | undefined>): RunnerSettings {
  const { data, problems } = readVariables(env, Object.keys(RULES) as (keyof Rules)[]);
  if (problems.length > 0) throw badEnvironment(problems);
  const s = data as RunnerSettings;
  if ((s.PADDOCK_AGENT_UID === undefined) !== (s.PADDOCK_AGENT_GID === undefined)) {
    throw new RunnerEnvError("paddock agent: PADDOCK_AGENT_UID and PADDOCK_AGENT_GID go together");
  }
  return s;
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
