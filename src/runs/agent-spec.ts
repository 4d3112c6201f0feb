import { InvalidArgumentError } from "../errors.js";
import type { EnvironmentRecord } from "../store/environments-repository.js";
import type { AgentKindName, PermissionPolicyName, RunModeName } from "../store/records.js";

/** Known ACP agents by name: the argv that starts each. */
export const AGENT_PRESETS: Readonly<Record<string, string[]>> = {
  "claude-code": ["claude-code-acp"],
  codex: ["codex-acp"],
};

/** An agent as a request or an environment names it; kind "" when it names none. */
export interface AgentRequest {
  kind: "" | AgentKindName;
  preset: string;
  command: string[];
}

export interface ResolvedAgent {
  agentCommand: string[];
  /** For ACP agents; absent for a command. */
  agent?: { kind: "acp"; mode: RunModeName; permissionPolicy: PermissionPolicyName };
}

/** Checks an agent spec; `field` names it in errors ("agent", "environment.agent"). Returns it with its kind settled. */
export function checkAgent(field: string, a: AgentRequest): AgentRequest {
  if (a.preset) {
    if (!AGENT_PRESETS[a.preset]) throw new InvalidArgumentError(`${field}.preset`, `unknown preset ${JSON.stringify(a.preset)}; known: ${Object.keys(AGENT_PRESETS).join(", ")}`);
    if (a.kind === "command") throw new InvalidArgumentError(`${field}.kind`, `preset ${a.preset} is an ACP agent`);
    return { ...a, kind: "acp" };
  }
  if (a.kind === "acp" && a.command.length === 0) throw new InvalidArgumentError(`${field}.command`, "an ACP agent needs a command or a preset");
  if (a.command.length > 0 && !a.command[0]!.trim()) throw new InvalidArgumentError(`${field}.command`, "the program (first element) is empty");
  return { ...a, kind: a.kind || (a.command.length > 0 ? "command" : "") };
}

/**
 * The run's agent: the request's (agent, else agent_command), else its environment's, else
 * the daemon's default command; mode and permission policy from the request, else the
 * environment, else background and (by mode) auto_allow or ask.
 */
export function resolveAgent(o: {
  agent: AgentRequest | null;
  agentCommand: string[];
  mode: "" | RunModeName;
  permissionPolicy: "" | PermissionPolicyName;
  env: EnvironmentRecord | undefined;
  defaultCommand: string[] | null;
}): ResolvedAgent {
  const requested = o.agent && (o.agent.kind || o.agent.preset || o.agent.command.length > 0) ? checkAgent("agent", o.agent) : null;
  const chosen: AgentRequest | null = requested ?? (o.agentCommand.length > 0 ? { kind: "command", preset: "", command: o.agentCommand } : (o.env?.agent ?? null));
  const mode = o.mode || o.env?.runMode || "background";
  if (!chosen || chosen.kind === "command" || !chosen.kind) {
    const command = chosen?.command.length ? chosen.command : o.defaultCommand;
    if (!command) throw new InvalidArgumentError("agent_command", "no agent command given, and the daemon has no default (--agent-command or PADDOCK_AGENT_COMMAND)");
    if (o.mode === "interactive") throw new InvalidArgumentError("mode", "interactive runs need an ACP agent (agent.kind ACP or a preset)");
    return { agentCommand: command };
  }
  const command = chosen.command.length > 0 ? chosen.command : AGENT_PRESETS[chosen.preset]!;
  const permissionPolicy = o.permissionPolicy || o.env?.permissionPolicy || (mode === "interactive" ? "ask" : "auto_allow");
  return { agentCommand: command, agent: { kind: "acp", mode, permissionPolicy } };
}
