import { quietLog } from "./github-auth.js";
import { gitHubError } from "./github-error.js";

export interface RepositoryRef {
  owner: string;
  repo: string;
}

export interface PullRequestParams extends RepositoryRef {
  /** The branch to merge, in the same repository. */
  head: string;
  /** Where it goes; "" for the repository's default branch. */
  base: string;
  title: string;
  body: string;
  draft: boolean;
}

export interface PullRequestRef {
  url: string;
  number: number;
  /** False when an open pull request for the branch existed already and is returned. */
  created: boolean;
}

/**
 * Opens the pull request for `head`, or returns the open one there is: asking first makes
 * a retry (or a restart in the middle) find the first one instead of a 422 or a duplicate.
 */
export async function openPullRequest(apiUrl: string, token: string, p: PullRequestParams, signal?: AbortSignal): Promise<PullRequestRef> {
  const { Octokit } = await import("@octokit/rest"); // loaded at the first pull request, not at every start
  const octokit = new Octokit({ auth: token, baseUrl: apiUrl, log: quietLog, request: { retries: 0, signal } });
  const where = `${p.owner}/${p.repo}`;
  const existing = async () => {
    const { data } = await octokit.rest.pulls.list({ owner: p.owner, repo: p.repo, head: `${p.owner}:${p.head}`, state: "open", per_page: 1 });
    return data[0] ? { url: data[0].html_url, number: data[0].number, created: false } : null;
  };
  try {
    const found = await existing();
    if (found) return found;
    const base = p.base || (await octokit.rest.repos.get({ owner: p.owner, repo: p.repo })).data.default_branch;
    try {
      const { data } = await octokit.rest.pulls.create({ owner: p.owner, repo: p.repo, head: p.head, base, title: p.title, body: p.body, draft: p.draft });
      return { url: data.html_url, number: data.number, created: true };
    } catch (error) {
      // Another caller opened it between our look and our create: that one is the answer.
      if ((error as { status?: number }).status === 422) {
        const raced = await existing();
        if (raced) return raced;
      }
      throw error;
    }
  } catch (error) {
    throw gitHubError(error, `could not open a pull request for ${p.head} on ${where}`);
  }
}
