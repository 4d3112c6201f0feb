import { FailedPreconditionError } from "../errors.js";

/**
 * GitHub refused or failed: the message says what paddock was doing and what GitHub said
 * (its status and message), never a header or a token.
 */
export class GitHubError extends FailedPreconditionError {
  override name = "GitHubError";
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

/** An Octokit RequestError (or a network failure) as a GitHubError saying what was being done. */
export function gitHubError(error: unknown, doing: string): GitHubError {
  if (error instanceof GitHubError) return error;
  const e = error as { status?: unknown; message?: unknown; response?: { data?: { message?: unknown } } } | null;
  const status = typeof e?.status === "number" ? e.status : undefined;
  const said = typeof e?.response?.data?.message === "string" ? e.response.data.message : typeof e?.message === "string" ? e.message : String(error);
  // Octokit appends a docs link to its messages; the client needs GitHub's words, not the link.
  const words = said.replace(/\s+-\s+https?:\/\/\S+$/, "").slice(0, 300);
  const hint = status === 401 ? " (the credential was refused: check the App id, key and installation, or the token)" : status === 404 ? " (not found, or the credential cannot see it)" : "";
  return new GitHubError(`${doing}: ${status ? `GitHub answered ${status}: ` : ""}${words}${hint}`, status);
}
