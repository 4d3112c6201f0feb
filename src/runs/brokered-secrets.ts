import { InvalidArgumentError } from "../errors.js";
import { parseAllowedDomain } from "../sandbox/egress-policy.js";
import type { SandboxProvider } from "../sandbox/provider.js";
import { normalizedPath, type BrokeredSecret, type SecretBrokerRule } from "../sandbox/secret-broker.js";
import { AGENT_PRESETS } from "./agent-spec.js";

export { brokeredPlaceholder } from "../sandbox/secret-broker.js";
export type { SecretBrokerRule };

/** A broker as a request gives it (proto SecretBroker). */
export interface BrokerInput {
  host: string;
  pathPrefix: string;
  header: string;
  template: string;
  basicUsername: string;
}

const TOKEN = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;
/** Headers the proxy owns or that frame the message: a secret in them would break or redirect the request. */
const RESERVED_HEADERS = new Set(["host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection", "cookie"]);
const CONTROL = /[\u0000-\u001f\u007f]/;

/** Checks a broker from the API; `field` names it in errors ("secrets[0].broker"). */
export function parseBroker(field: string, b: BrokerInput): SecretBrokerRule {
  const domain = parseAllowedDomain(b.host);
  if (typeof domain === "string") throw new InvalidArgumentError(`${field}.host`, `${domain}; brokered destinations are HTTPS, port 443 unless given`);
  const port = b.host.includes(":") ? domain.ports[0]! : 443;
  const pathPrefix = b.pathPrefix;
  if (pathPrefix && (normalizedPath(pathPrefix) !== pathPrefix || pathPrefix.includes("?"))) {
    throw new InvalidArgumentError(`${field}.path_prefix`, "must be an absolute path without dot segments or a query, e.g. /v1/");
  }
  if (b.basicUsername) {
    if (b.header || b.template) throw new InvalidArgumentError(`${field}.basic_username`, "HTTP basic sets Authorization itself: give no header or template with it");
    if (b.basicUsername.includes(":") || CONTROL.test(b.basicUsername)) throw new InvalidArgumentError(`${field}.basic_username`, "may not hold a colon or control characters");
    return { host: domain.pattern, port, pathPrefix, header: "authorization", template: "", basicUsername: b.basicUsername };
  }
  const header = b.header.toLowerCase();
  if (!TOKEN.test(header)) throw new InvalidArgumentError(`${field}.header`, "a header name (e.g. x-api-key or authorization) or basic_username is required");
  if (RESERVED_HEADERS.has(header)) throw new InvalidArgumentError(`${field}.header`, `${header} cannot carry a secret`);
  const template = b.template || "{value}";
  if (!template.includes("{value}")) throw new InvalidArgumentError(`${field}.template`, 'must contain "{value}", where the secret goes');
  if (CONTROL.test(template)) throw new InvalidArgumentError(`${field}.template`, "may not hold control characters");
  return { host: domain.pattern, port, pathPrefix, header, template, basicUsername: "" };
}

/** A value that cannot go into a header; it is never quoted. */
export function brokeredValueProblem(value: string): string | null {
  return CONTROL.test(value) ? "a brokered secret goes into an HTTP header: it may not hold line breaks or control characters" : null;
}

/**
 * The additional data a secret is sealed with: its environment, its name and, when it is
 * brokered, its rule. Whoever can write the database but not read secrets.key cannot point
 * a secret at another destination: the value no longer opens.
 */
export function secretAad(environmentId: string, name: string, broker: SecretBrokerRule | null): string {
  if (!broker) return `${environmentId}/${name}`;
  return `${environmentId}/${name}#broker\n${[broker.host, broker.port, broker.pathPrefix, broker.header, broker.template, broker.basicUsername].join("\n")}`;
}

/**
 * What the presets broker by default: their model API's key, for its API host — or for the
 * host of the environment's base-URL variable when that is an https URL (a gateway, or a
 * test's fake). A secret brokered explicitly keeps its own rule.
 */
const PRESET_KEYS: Readonly<Record<string, { secret: string; baseUrl: string; host: string; header: string; template: string }>> = {
  "claude-code": { secret: "ANTHROPIC_API_KEY", baseUrl: "ANTHROPIC_BASE_URL", host: "api.anthropic.com", header: "x-api-key", template: "{value}" },
  codex: { secret: "OPENAI_API_KEY", baseUrl: "OPENAI_BASE_URL", host: "api.openai.com", header: "authorization", template: "Bearer {value}" },
};

/** The preset whose argv the run's agent command is, or "". */
export function presetOf(agentCommand: readonly string[]): string {
  return Object.entries(AGENT_PRESETS).find(([, argv]) => argv.length === agentCommand.length && argv.every((a, i) => a === agentCommand[i]))?.[0] ?? "";
}

/** The preset's default rule for the secret `name`, or why there is none (a note for the run's log), or null when the preset has no key. */
export function presetBroker(agentCommand: readonly string[], envVars: Readonly<Record<string, string>>, name: string): SecretBrokerRule | string | null {
  const preset = PRESET_KEYS[presetOf(agentCommand)];
  if (!preset || preset.secret !== name) return null;
  const base = envVars[preset.baseUrl];
  let host = preset.host;
  if (base) {
    let url: URL;
    try {
      url = new URL(base);
    } catch {
      return `${preset.baseUrl} is not a URL`;
    }
    if (url.protocol !== "https:") return `${preset.baseUrl} is not an https URL, and a key is brokered over TLS only`;
    host = url.host;
  }
  try {
    return parseBroker(name, { host, pathPrefix: "", header: preset.header, template: preset.template, basicUsername: "" });
  } catch (error) {
    return `${host} cannot be a brokered destination (${(error as Error).message})`;
  }
}

export interface RunSecret {
  name: string;
  value: string;
  setupOnly: boolean;
  broker: SecretBrokerRule | null;
}

/**
 * The run's secrets as they are applied: explicit brokers as set; where the provider can
 * broker, the preset's key brokered by default; notes say what was given as is and why.
 */
export function runSecrets(
  secrets: readonly RunSecret[],
  o: { agentCommand: readonly string[]; envVars: Readonly<Record<string, string>>; providerBrokers: boolean },
): { secrets: RunSecret[]; notes: string[] } {
  const notes: string[] = [];
  const out = secrets.map((s) => {
    if (s.broker) return s;
    const preset = presetBroker(o.agentCommand, o.envVars, s.name);
    if (preset === null) return s;
    if (!o.providerBrokers) {
      notes.push(`note: ${s.name} is given to the agent as is: this provider cannot keep it out of the sandbox (docker can)`);
      return s;
    }
    if (typeof preset === "string") {
      notes.push(`note: ${s.name} is given to the agent as is: ${preset}`);
      return s;
    }
    return { ...s, broker: preset };
  });
  return { secrets: out, notes };
}

/** The brokered secrets of one stage: setup has them all (as it has every plain one), the agent all but setup-only ones. */
export function brokersOfStage(secrets: readonly RunSecret[], stage: "setup" | "agent"): BrokeredSecret[] {
  return secrets.flatMap((s) => (s.broker && (stage === "setup" || !s.setupOnly) ? [{ name: s.name, value: s.value, rule: s.broker }] : []));
}

/**
 * Why a provider cannot take an environment's brokered secrets, or null. A provider brokers
 * only when every request from its sandboxes to a brokered destination is forced through
 * paddock's egress proxy; otherwise the secret would have to be in the sandbox after all.
 */
export function brokerRefusal(provider: Pick<SandboxProvider, "name" | "brokersSecrets">, brokered: readonly string[]): string | null {
  if (brokered.length === 0 || provider.brokersSecrets) return null;
  // TODO(modal): Modal's outbound header-injection policy can express a host + header rule;
  // until the modal provider implements it and sets brokersSecrets, its runs are refused here.
  const why =
    provider.name === "local"
      ? "the local provider runs the agent on the host, where nothing forces its traffic through the egress proxy"
      : `the ${provider.name} provider does not force its sandboxes' traffic through paddock's egress proxy${provider.name === "docker" ? " here (egress enforcement is not set up)" : ""}`;
  return `the environment's brokered secrets (${brokered.join(", ")}) need a provider that forces the agent's traffic through the egress proxy, and ${why}; use provider docker, or make the secrets plain`;
}
