import { GitHubError, gitHubError } from "./github-error.js";

/**
 * Where the daemon's GitHub tokens come from. A token is asked for per operation and
 * dropped after it: it is never stored, logged or handed to a sandbox.
 */
export interface GitHubAuth {
  /** What kind of credential this is, for messages ("the GitHub App 123", "the environment's GITHUB_TOKEN"). */
  readonly describe: string;
  token(): Promise<string>;
}

export interface GitHubAppSettings {
  appId: string;
  /** The App's private key (PEM), as read from --github-app-key-file. */
  privateKey: string;
  installationId: string;
  /** REST API base URL: https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise. */
  apiUrl: string;
}

/**
 * A GitHub App installation: each token() signs a fresh App JWT and exchanges it for a new
 * installation token (refresh: true skips auth-app's in-memory token cache, so nothing outlives its use).
 */
export function gitHubAppAuth(s: GitHubAppSettings): GitHubAuth {
  // Octokit is loaded at the first use: a daemon that never opens a pull request never pays for it.
  let loaded: ReturnType<typeof load> | null = null;
  const load = async () => {
    const [{ createAppAuth }, { Octokit }] = await Promise.all([import("@octokit/auth-app"), import("@octokit/rest")]);
    return createAppAuth({ appId: s.appId, privateKey: s.privateKey, installationId: s.installationId, request: new Octokit({ baseUrl: s.apiUrl, log: quietLog }).request });
  };
  const describe = `the GitHub App ${s.appId} (installation ${s.installationId})`;
  return {
    describe,
    async token() {
      try {
        const auth = await (loaded ??= load());
        const { token } = await auth({ type: "installation", refresh: true });
        return token;
      } catch (error) {
        throw gitHubError(error, `could not get an installation token for ${describe}`);
      }
    },
  };
}

/** A token the operator or an environment gave (a personal access token, a fine-grained token). */
export function staticTokenAuth(token: string, describe: string): GitHubAuth {
  if (!token) throw new GitHubError(`${describe} is empty`);
  return { describe, token: () => Promise.resolve(token) };
}

/** Octokit warns on deprecations through console; the daemon's log is pino's alone. */
export const quietLog = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
