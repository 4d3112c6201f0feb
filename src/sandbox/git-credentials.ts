/**
 * Git over HTTPS with a token that appears in no URL, argument, config file or log: git
 * asks a credential helper, and the helper prints the token from its own environment,
 * which only this one git process (and its children) has. `credential.helper=` first
 * drops every helper the user configured, so no "store" helper writes the token to disk
 * when git approves it. The helper answers only for the host it was made for.
 */
const HELPER = [
  "!f() {",
  'test "$1" = get || exit 0;',
  'h=""; while IFS= read -r l; do case "$l" in host=*) h="${l#host=}";; esac; done;',
  'test "$h" = "$PADDOCK_GIT_CREDENTIAL_HOST" || exit 0;',
  "printf 'username=x-access-token\\npassword=%s\\n' \"$PADDOCK_GIT_CREDENTIAL\";",
  "}; f",
].join(" ");

export interface GitCredential {
  /** `-c` options to put before the git subcommand. */
  args: string[];
  /** Variables for that git process's environment alone. */
  env: Record<string, string>;
}

/** The git options and environment that give `token` to git for `url`'s host (host:port, as git names it). */
export function gitCredential(url: string, token: string): GitCredential {
  const host = new URL(url).host;
  return {
    args: ["-c", "credential.helper=", "-c", `credential.helper=${HELPER}`, "-c", "http.followRedirects=false"],
    env: { PADDOCK_GIT_CREDENTIAL: token, PADDOCK_GIT_CREDENTIAL_HOST: host },
  };
}

/** The token for a repository URL, or null when it needs none (or is not on a host paddock has credentials for). */
export type GitCredentialSource = (url: string) => Promise<string | null>;
