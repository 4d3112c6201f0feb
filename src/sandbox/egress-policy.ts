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

/** "example.com" matches itself; "*.example.com" matches its subdomains, not itself. */
export function domainMatches(pattern: string, host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, "");
  if (pattern.startsWith("*.")) return h.endsWith(pattern.slice(1)) && h.length > pattern.length - 1;
  return h === pattern;
}

export function allowedBy(policy: NetworkPolicy, host: string): boolean {
  if (policy.access === "full") return true;
  const lists = policy.access === "trusted" ? [TRUSTED_DOMAINS] : policy.includeTrusted ? [policy.allowedDomains, TRUSTED_DOMAINS] : [policy.allowedDomains];
  return lists.some((list) => list.some((p) => domainMatches(p, host)));
}
