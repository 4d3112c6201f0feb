import { spawn } from "node:child_process";
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { SandboxError } from "../errors.js";

/**
 * fsck messages that are only warnings by default but never acceptable from a sandbox:
 * tree entries named ".", ".." or ".git" (and look-alikes), paths with "/" in an entry.
 */
const STRICT = "--strict=hasDot=error,hasDotdot=error,hasDotgit=error,fullPathname=error,zeroPaddedFilemode=error,nulInCommit=error";
const MAX_HEADER = 1024 * 1024;

type Git = (args: string[]) => Promise<string>;

/**
 * Takes objects in from a git bundle with every object checked, and sets `refs` (bundle
 * ref → local ref) to what the bundle says. `git fetch <bundle>` (git 2.39 here) checks
 * nothing even with fetch.fsckObjects set, so the bundle's pack goes through
 * `git index-pack --strict` instead. Throws a SandboxError naming what was wrong: a
 * missing prerequisite (the repository lacks commits the bundle builds on), a missing
 * ref, or git's fsck message.
 */
export async function unbundleChecked(o: { cwd: string; bundle: string; refs: Record<string, string | null>; git: Git; env?: NodeJS.ProcessEnv; signal?: AbortSignal }): Promise<Record<string, string>> {
  const fh = await open(o.bundle, "r");
  let head: Buffer;
  try {
    const buf = Buffer.alloc(MAX_HEADER);
    const { bytesRead } = await fh.read(buf, 0, MAX_HEADER, 0);
    head = buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
  const end = head.indexOf("\n\n");
  const lines = end < 0 ? [] : head.subarray(0, end).toString("utf8").split("\n");
  if (end < 0 || !/^# v[23] git bundle$/.test(lines[0] ?? "")) throw new SandboxError("not a git bundle", false);
  const prerequisites: string[] = [];
  const advertised = new Map<string, string>();
  for (const line of lines.slice(1)) {
    if (line.startsWith("@")) {
      if (line !== "@object-format=sha1" && line !== "@object-format=sha256") throw new SandboxError(`the bundle asks for ${JSON.stringify(line.slice(0, 80))}`, false);
    } else if (line.startsWith("-")) {
      prerequisites.push(line.slice(1).split(" ")[0]!);
    } else {
      const m = /^([0-9a-f]{40}|[0-9a-f]{64}) (\S+)$/.exec(line);
      if (!m) throw new SandboxError("the bundle's header is malformed", false);
      advertised.set(m[2]!, m[1]!);
    }
  }
  const missing: string[] = [];
  for (const p of prerequisites) {
    if (!/^[0-9a-f]{40,64}$/.test(p)) throw new SandboxError("the bundle's header is malformed", false);
    if (!(await o.git(["cat-file", "-e", `${p}^{commit}`]).then(() => true, () => false))) missing.push(p);
  }
  if (missing.length > 0) throw new SandboxError(`the repository lacks ${missing.length} commit(s) the bundle builds on (${missing.slice(0, 3).join(", ")})`, false);
  const out: Record<string, string> = {};
  for (const ref of Object.keys(o.refs)) {
    const sha = advertised.get(ref);
    if (!sha) throw new SandboxError(`the bundle has no ${ref}`, false);
    out[ref] = sha;
  }
  await new Promise<void>((resolve, reject) => {
    const child = spawn("git", ["-c", "core.hooksPath=/dev/null", "index-pack", "--stdin", "--fix-thin", STRICT], { cwd: o.cwd, env: o.env ?? process.env, stdio: ["pipe", "ignore", "pipe"], signal: o.signal });
    let err = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => (err.length < 1 << 16 ? (err += d) : undefined));
    child.stdin.on("error", () => undefined); // index-pack stops reading at the first bad object
    createReadStream(o.bundle, { start: end + 2 }).on("error", reject).pipe(child.stdin);
    child.once("error", reject);
    child.once("close", (code) => {
      if (code === 0) return resolve();
      const why = err.trim().split("\n").filter((l) => !l.startsWith("fatal: fsck error")).slice(-2).join("; ");
      reject(new SandboxError(`git's object checks refused the bundle: ${why || `index-pack exit ${code}`}`, false));
    });
  });
  // A null local ref: the caller moves it itself (e.g. only as a fast-forward).
  for (const [ref, local] of Object.entries(o.refs)) if (local) await o.git(["update-ref", local, out[ref]!]);
  return out;
}
