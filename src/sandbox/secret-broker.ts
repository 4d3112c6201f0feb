import { domainMatches } from "./egress-policy.js";

/**
 * How the egress proxy applies a brokered secret: for HTTPS requests to `host` (exact, or
 * "*.domain" for its subdomains) on `port` whose path starts with `pathPrefix`, it sets
 * `header` to `template` with "{value}" replaced — or, with `basicUsername`, HTTP basic.
 */
export interface SecretBrokerRule {
  host: string;
  port: number;
  pathPrefix: string;
  /** Lowercase; "authorization" for basic. */
  header: string;
  template: string;
  basicUsername: string;
}

/** A secret the proxy holds for a run's stage; the sandbox holds brokeredPlaceholder(name). */
export interface BrokeredSecret {
  name: string;
  value: string;
  rule: SecretBrokerRule;
}

/** What the sandbox sees in the secret's place: tools that insist on a key being set work unchanged. */
export function brokeredPlaceholder(name: string): string {
  return `paddock-brokered-${name}`;
}

/** Whether the rule's destination is host:port (`host` normalised by the caller). */
export function brokerMatchesHost(rule: SecretBrokerRule, host: string, port: number): boolean {
  return rule.port === port && domainMatches(rule.host, host);
}

/**
 * The request path as the upstream will read it (dot segments resolved, "%2e" included),
 * or null when it is not an origin-form path. Prefixes are checked against it, so
 * "/v1/../admin" is "/admin", not under "/v1/".
 */
export function normalizedPath(raw: string): string | null {
  if (!raw.startsWith("/") || raw.startsWith("//")) return null;
  try {
    const url = new URL(raw, "https://paddock.invalid");
    return url.pathname + url.search;
  } catch {
    return null;
  }
}

export function brokerMatchesPath(rule: SecretBrokerRule, path: string): boolean {
  return path.startsWith(rule.pathPrefix);
}

/** The header and its value the proxy sets for the secret. */
export function brokerHeader(b: BrokeredSecret): [name: string, value: string] {
  if (b.rule.basicUsername) return ["authorization", `Basic ${Buffer.from(`${b.rule.basicUsername}:${b.value}`).toString("base64")}`];
  return [b.rule.header, b.rule.template.split("{value}").join(b.value)];
}

/** Text with every value (and the forms brokerHeader makes of it) replaced: for errors that may quote a request. */
export function scrubSecrets(text: string, secrets: readonly BrokeredSecret[]): string {
  let out = text;
  for (const b of secrets) {
    for (const form of [b.value, brokerHeader(b)[1]]) if (form) out = out.split(form).join(`[${b.name}]`);
  }
  return out;
}
