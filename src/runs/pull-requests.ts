import type { Logger } from "pino";
import { FailedPreconditionError } from "../errors.js";
import { staticTokenAuth, type GitHubAuth } from "../github/github-auth.js";
import { GitHubError } from "../github/github-error.js";
import { openPullRequest, type PullRequestRef, type RepositoryRef } from "../github/pull-requests.js";
import { git } from "../sandbox/git.js";
import { gitCredential, type GitCredentialSource } from "../sandbox/git-credentials.js";
import { sourcePath } from "../sandbox/repository-source.js";
import type { LogLine } from "../store/records.js";
import type { StoredRun } from "../store/runs-repository.js";
import type { TasksRepository } from "../store/tasks-repository.js";
import type { Environments } from "./environments.js";
import { GITHUB_TOKEN_SECRETS } from "./git-host-tokens.js";

export interface GitHubSettings {
  /** REST API base URL (https://api.github.com, or https://HOST/api/v3). */
  apiUrl: string;
  /** Where its repositories are cloned from (https://github.com, or https://HOST). */
  webUrl: string;
  /** The daemon's GitHub App; null: only environments' GITHUB_TOKEN secrets. */
  app: GitHubAuth | null;
}

export interface PullRequestOptions {
  title: string;
  body: string;
  draft: boolean;
  base: string;
}

export interface PullRequestsDeps {
  /** The daemon's data dir: mirrors of remote repositories are under <root>/repos. */
  root: string;
  github: GitHubSettings;
  tasks: Pick<TasksRepository, "get">;
  environments: Pick<Environments, "secretValues">;
  /** The agent's last output lines, for the body. */
  lastOutput: (runId: string, limit: number) => LogLine[];
  /** Records the pull request on the run. */
  record: (runId: string, url: string, number: number) => void;
  /** A note in the run's log. */
  system: (runId: string, text: string) => void;
  logger: Logger;
}

/** The longest one pull request may take (token, push, API calls) before it fails. */
const OPERATION_TIMEOUT_MS = 5 * 60_000;
/** Host git settings for a push from the daemon's copy: no hooks run there. */
const HOST_GIT = ["-c", "core.hooksPath=/dev/null"];
const SUMMARY_LINES = 40;
const SUMMARY_CHARS = 6000;

/**
 * Pull requests from runs: the daemon pushes the run's branch from its own copy of the
 * repository and opens the pull request, with a token it gets for that one operation.
 * The sandbox is gone by then, and never had the token.
 */
export class PullRequests {
  /** One operation per run at a time: a retry waits for the first and finds its pull request. */
  private readonly inFlight = new Map<string, Promise<PullRequestRef>>();

  constructor(private readonly d: PullRequestsDeps) {}

  /** `signal`: the caller went away, or the daemon stops; the operation also ends after OPERATION_TIMEOUT_MS. */
  open(run: StoredRun, o: PullRequestOptions, signal: AbortSignal): Promise<PullRequestRef> {
    const prior = this.inFlight.get(run.id) ?? Promise.resolve(null);
    const next = prior.catch(() => null).then(() => this.openOnce(run, o, AbortSignal.any([signal, AbortSignal.timeout(OPERATION_TIMEOUT_MS)])));
    this.inFlight.set(run.id, next);
    const forget = () => {
      if (this.inFlight.get(run.id) === next) this.inFlight.delete(run.id);
    };
    next.then(forget, forget);
    return next;
  }

  private async openOnce(run: StoredRun, o: PullRequestOptions, signal: AbortSignal): Promise<PullRequestRef> {
    signal.throwIfAborted();
    if (!run.resultCommit) {
      throw new FailedPreconditionError(`run ${run.id} has no work on ${run.resultBranch} yet; a pull request can be opened once the run is cleaned`);
    }
    const task = this.d.tasks.get(run.taskId);
    if (!task) throw new FailedPreconditionError(`task ${run.taskId} of run ${run.id} is gone`);
    const source = sourcePath(this.d.root, task.repositoryUrl);
    const remote = /^https?:\/\//.test(task.repositoryUrl)
      ? task.repositoryUrl
      : await git(["remote", "get-url", "origin"], { cwd: source }).catch(() => "");
    const where = gitHubRepositoryOf(this.d.github.webUrl, remote);
    if (!where) {
      throw new FailedPreconditionError(
        `the repository of run ${run.id} (${withoutUserInfo(remote) || task.repositoryUrl}) is not on ${this.d.github.webUrl}; pull requests go to the daemon's GitHub (--github-api-url)`,
      );
    }
    const auth = this.authFor(run);
    // One token for this operation: the push and the API calls; then it is dropped.
    const token = await auth.token();
    const cred = gitCredential(remote, token);
    try {
      await git([...HOST_GIT, ...cred.args, "push", "--quiet", remote, `${run.resultCommit}:refs/heads/${run.resultBranch}`], { cwd: source, env: cred.env, signal });
    } catch (error) {
      throw new GitHubError(`could not push ${run.resultBranch} to ${where.owner}/${where.repo} with ${auth.describe}: ${(error as Error).message}`);
    }
    const pr = await openPullRequest(this.d.github.apiUrl, token, {
      ...where,
      head: run.resultBranch,
      base: o.base || run.branch,
      title: o.title || task.title,
      body: o.body || this.bodyOf(run, task.description),
      draft: o.draft,
    }, signal);
    this.d.record(run.id, pr.url, pr.number);
    this.d.system(run.id, `pull request #${pr.number} ${pr.created ? "opened" : "already open"}: ${pr.url}`);
    this.d.logger.info({ runId: run.id, pullRequest: pr.url, created: pr.created }, "pull request");
    return pr;
  }

  /** The daemon's App, else a GitHub token among the run's environment's secrets. */
  private authFor(run: StoredRun): GitHubAuth {
    if (this.d.github.app) return this.d.github.app;
    const secrets = run.environmentId ? this.d.environments.secretValues(run.environmentId) : [];
    for (const name of GITHUB_TOKEN_SECRETS) {
      const secret = secrets.find((s) => s.name === name);
      if (secret?.value) return staticTokenAuth(secret.value, `the environment's ${name} secret`);
    }
    throw new FailedPreconditionError(
      `no GitHub credential for run ${run.id}: configure a GitHub App (--github-app-id, --github-app-key-file, --github-installation-id) or give the run's environment a GITHUB_TOKEN secret`,
    );
  }

  /** The task's description and what the agent said last. */
  private bodyOf(run: StoredRun, description: string): string {
    let output = this.d.lastOutput(run.id, SUMMARY_LINES).map((l) => l.text).join("\n");
    if (output.length > SUMMARY_CHARS) output = "…" + output.slice(-SUMMARY_CHARS);
    const parts = [
      description.trim(),
      `### Run summary\n\nRun \`${run.id}\` ${run.status}; its work is \`${run.resultCommit.slice(0, 12)}\` on \`${run.resultBranch}\`.`,
      output.trim() ? `The agent's last output:\n\n\`\`\`\n${output.replace(/```/g, "`\u200b``")}\n\`\`\`` : "",
      "_Opened by paddock._",
    ];
    return parts.filter(Boolean).join("\n\n");
  }
}

/** Where a GitHub API's repositories live: api.github.com → github.com, https://HOST/api/v3 → https://HOST. */
export function gitHubWebUrl(apiUrl: string): string {
  const u = new URL(apiUrl);
  if (u.hostname === "api.github.com") return "https://github.com";
  return `${u.origin}${u.pathname.replace(/\/+$/, "").replace(/\/api\/v3$/, "")}`;
}

/** owner and repo of a URL on the GitHub at webUrl; null for any other place. */
export function gitHubRepositoryOf(webUrl: string, url: string): RepositoryRef | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  const web = new URL(webUrl);
  if (u.origin !== web.origin || u.username || u.password) return null;
  const base = web.pathname.replace(/\/+$/, "");
  if (!u.pathname.startsWith(`${base}/`)) return null;
  const m = /^([A-Za-z0-9][A-Za-z0-9_.-]*)\/([A-Za-z0-9_.-]+?)(?:\.git)?\/?$/.exec(u.pathname.slice(base.length + 1));
  return m ? { owner: m[1]!, repo: m[2]! } : null;
}

/** Tokens for cloning private repositories on the daemon's GitHub: the App's, minted per clone or fetch. */
export function gitHubCloneCredentials(github: GitHubSettings): GitCredentialSource {
  return async (url) => (github.app && gitHubRepositoryOf(github.webUrl, url) ? github.app.token() : null);
}

/** A URL for a message: an origin such as https://user:token@host/… keeps its credentials to itself. */
function withoutUserInfo(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@]*@/i, "$1");
}
