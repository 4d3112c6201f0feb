import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { isAbsolute, join } from "node:path";
import { SandboxError } from "../errors.js";
import { git } from "./git.js";
import { gitCredential, type GitCredentialSource } from "./git-credentials.js";

/**
 * Where a sandbox takes its repository from, on this host: a local path as it is, anything
 * else cloned once into a bare mirror under <root>/repos and fetched on later runs. The
 * agent's result branch comes back into this same repository.
 */
export async function prepareSource(root: string, url: string, signal: AbortSignal, progress: (line: string) => void, credentials?: GitCredentialSource): Promise<string> {
  if (isAbsolute(url)) {
    if (!existsSync(url)) throw new SandboxError(`repository path ${url} does not exist`, false);
    return url;
  }
  const mirror = sourcePath(root, url);
  // A private repository on the daemon's GitHub: the token goes to this git process alone.
  const token = /^https?:\/\//.test(url) ? await credentials?.(url) : null;
  const auth = token ? gitCredential(url, token) : { args: [], env: {} };
  if (existsSync(join(mirror, "HEAD"))) {
    progress(`fetching ${url}`);
    await git([...auth.args, "fetch", "--quiet", "origin", "+refs/heads/*:refs/heads/*"], { cwd: mirror, signal, env: auth.env });
  } else {
    progress(`cloning ${url}`);
    await mkdir(join(root, "repos"), { recursive: true });
    const tmp = `${mirror}.tmp-${process.pid}`;
    await rm(tmp, { recursive: true, force: true });
    await git([...auth.args, "clone", "--quiet", "--bare", url, tmp], { signal, env: auth.env });
    await rm(mirror, { recursive: true, force: true });
    await rename(tmp, mirror);
  }
  return mirror;
}

/** The daemon's copy of a repository: the local path itself, or its mirror under <root>/repos. */
export function sourcePath(root: string, url: string): string {
  return isAbsolute(url) ? url : join(root, "repos", createHash("sha256").update(url).digest("hex").slice(0, 24) + ".git");
}
