import { parseAllowedDomain, TRUSTED_DOMAINS, type NetworkPolicy } from "../egress-policy.js";

/** How a stage's network policy becomes Modal's: open, or an outbound allowlist of domains. */
export interface ModalNetwork {
  /** null: open (Modal's default). Otherwise the only domains the sandbox may reach, no CIDRs. */
  allowedDomains: string[] | null;
  /** For the run's log: what Modal enforces. */
  describe: string;
}

/**
 * Modal's allowlist names domains (with "*." prefixes) and is enforced for TLS to port 443;
 * paddock's names domains and ports (80 and 443 unless given). A policy maps only when the
 * result is not looser: an entry for another port, which Modal cannot express, is refused
 * (the caller turns the string into the run's error); plain HTTP on port 80 ends up blocked,
 * which is stricter and said in the description.
 */
export function modalNetworkOf(policy: NetworkPolicy): ModalNetwork | string {
  if (policy.access === "full") return { allowedDomains: null, describe: "open (no restriction)" };
  const entries = [...(policy.access === "custom" ? policy.allowedDomains : []), ...(policy.access === "trusted" || policy.includeTrusted ? TRUSTED_DOMAINS : [])];
  const domains = new Set<string>();
  for (const entry of entries) {
    const parsed = parseAllowedDomain(entry);
    if (typeof parsed === "string") return `network policy entry ${parsed}`;
    const odd = parsed.ports.filter((p) => p !== 80 && p !== 443);
    if (odd.length > 0) {
      return `network policy entry ${JSON.stringify(entry)} opens port ${odd.join(", ")}, which Modal's domain allowlist cannot express (it allows TLS to port 443 only); use the docker provider for this environment, or drop the port`;
    }
    domains.add(parsed.pattern);
  }
  const list = [...domains].sort();
  return {
    allowedDomains: list,
    describe: list.length === 0 ? "no outbound access" : `outbound HTTPS (port 443) to ${list.length} domain${list.length === 1 ? "" : "s"} only (${list.slice(0, 8).join(", ")}${list.length > 8 ? ", …" : ""}); plain HTTP is blocked`,
  };
}

export function sameNetwork(a: ModalNetwork, b: ModalNetwork): boolean {
  return JSON.stringify(a.allowedDomains) === JSON.stringify(b.allowedDomains);
}
