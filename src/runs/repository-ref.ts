import { existsSync, realpathSync, statSync } from "node:fs";
import { isAbsolute, join } from "node:path";
import { InvalidArgumentError } from "../errors.js";

const OWNER_REPO = /^[A-Za-z0-9][A-Za-z0-9_.-]*\/[A-Za-z0-9_.-]+$/;
const URL_SCHEMES = /^(https?|ssh|git|file):\/\/[^\s]+$/;
const SCP_LIKE = /^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+:[^\s]+$/;

/**
 * Turns what a client wrote into something git can use: an absolute local path (which must
 * be a git repository), a git URL as given, or "owner/repo" on the daemon's git host.
 */
export function resolveRepository(repository: string, gitHost: string): string {
  const r = repository.trim();
  if (!r) throw new InvalidArgumentError("repository", "is required");
  if (isAbsolute(r)) {
    if (!existsSync(r) || !statSync(r).isDirectory()) {
      throw new InvalidArgumentError("repository", `local path ${r} does not exist or is not a directory`);
    }
    if (!existsSync(join(r, ".git")) && !existsSync(join(r, "HEAD"))) {
      throw new InvalidArgumentError("repository", `local path ${r} is not a git repository`);
    }
    return realpathSync(r);
  }
  if (URL_SCHEMES.test(r) || SCP_LIKE.test(r)) return r;
  if (OWNER_REPO.test(r) && !r.includes("..")) {
    return `${gitHost.replace(/\/+$/, "")}/${r.replace(/\.git$/, "")}.git`;
  }
  if (r.startsWith(".") || r.startsWith("~")) {
    throw new InvalidArgumentError("repository", `relative path ${JSON.stringify(r)}: give an absolute path (the CLI resolves it for you)`);
  }
  throw new InvalidArgumentError("repository", `${JSON.stringify(r)} is not owner/repo, a git URL or an absolute path`);
}
