/**
 * Network policy of a sandbox, and the trusted allowlist: the one reviewed list of
 * package registries and git hosts that "trusted" access opens. Change it with a review.
 */
export const TRUSTED_DOMAINS: readonly string[] = [
  // git hosts
  "github.com",
  "*.github.com",
  "*.githubusercontent.com",
  "gitlab.com",
  "*.gitlab.com",
  "bitbucket.org",
  // JavaScript
  "registry.npmjs.org",
  "registry.yarnpkg.com",
  // Python
  "pypi.org",
  "files.pythonhosted.org",
  // Rust
  "crates.io",
  "static.crates.io",
  "index.crates.io",
  // Go
  "proxy.golang.org",
  "sum.golang.org",
  // Java
  "repo.maven.apache.org",
  "repo1.maven.org",
  "plugins.gradle.org",
  // Ruby
  "rubygems.org",
  // Debian and Ubuntu packages
  "deb.debian.org",
  "security.debian.org",
  "archive.ubuntu.com",
  "security.ubuntu.com",
];

export type NetworkAccessName = "trusted" | "full" | "custom";

export interface NetworkPolicy {
  access: NetworkAccessName;
  allowedDomains: readonly string[];
  includeTrusted: boolean;
}

/** Ports a name in a policy opens when its entry names none. */
export const DEFAULT_PORTS: readonly number[] = [80, 443];

/** One allowed_domains entry: "example.com", "*.example.com", either with ":port". */
export interface AllowedDomain {
  pattern: string;
  ports: readonly number[];
}

const DOMAIN = /^(\*\.)?(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/;

/** An entry as the policy reads it, or what is wrong with it (for the API's error). */
export function parseAllowedDomain(entry: string): AllowedDomain | string {
  const m = /^([^:]*)(?::(.*))?$/.exec(entry.trim().toLowerCase())!;
  const pattern = m[1]!;
  if (!DOMAIN.test(pattern)) return `${JSON.stringify(entry)} is not a domain (example.com, *.example.com, optionally with :port)`;
  if (m[2] === undefined) return { pattern, ports: DEFAULT_PORTS };
  const port = /^[1-9][0-9]{0,4}$/.test(m[2]) ? Number(m[2]) : 0;
  if (port < 1 || port > 65535) return `${JSON.stringify(entry)}: the port must be a number from 1 to 65535`;
  return { pattern, ports: [port] };
}

/**
 * "example.com" matches itself; "*.example.com" matches its subdomains, not itself.
 * `host` is normalised (normalizeHost) by the caller.
 */
export function domainMatches(pattern: string, host: string): boolean {
  if (pattern.startsWith("*.")) return host.endsWith(pattern.slice(1)) && host.length > pattern.length - 1;
  return host === pattern;
}

const TRUSTED_RULES: readonly AllowedDomain[] = TRUSTED_DOMAINS.map((pattern) => ({ pattern, ports: DEFAULT_PORTS }));

/**
 * Whether a stage may ask for host:port. Ports are part of the policy: 80 and 443 unless
 * an entry names its own. `full` is any name and port (where it reaches is still checked).
 */
export function allowedBy(policy: NetworkPolicy, host: string, port: number): boolean {
  if (policy.access === "full") return true;
  const own = policy.access === "custom" ? policy.allowedDomains.map(parseAllowedDomain).filter((d): d is AllowedDomain => typeof d !== "string") : [];
  const rules = policy.access === "trusted" || policy.includeTrusted ? [...own, ...TRUSTED_RULES] : own;
  return rules.some((r) => r.ports.includes(port) && domainMatches(r.pattern, host));
}
