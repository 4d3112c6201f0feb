/**
 * Secret names that are credentials for a git host. They stay with the daemon (which uses
 * GitHub's to push and open pull requests) unless the environment grants them to its
 * sandboxes: an agent with a push token can push anywhere the token reaches.
 */
export const GIT_HOST_TOKEN_NAMES: ReadonlySet<string> = new Set([
  "GITHUB_TOKEN",
  "GH_TOKEN",
  "GITHUB_ENTERPRISE_TOKEN",
  "GH_ENTERPRISE_TOKEN",
  "GITLAB_TOKEN",
  "GL_TOKEN",
  "BITBUCKET_TOKEN",
  "GIT_TOKEN",
]);

/** The secrets of an environment GitHub takes, in the order they are tried. */
export const GITHUB_TOKEN_SECRETS = ["GITHUB_TOKEN", "GH_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN"] as const;

export function isGitHostToken(name: string): boolean {
  return GIT_HOST_TOKEN_NAMES.has(name.toUpperCase());
}
