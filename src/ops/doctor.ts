import { execFile } from "node:child_process";
import { constants, existsSync, statSync } from "node:fs";
import { access } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import Docker from "dockerode";
import { EXIT } from "../cli/exit.js";
import type { Config } from "../config.js";
import { firewallProblem } from "../sandbox/docker/egress-network.js";
import { DataDirLockedError, lockDataDir } from "../store/data-dir-lock.js";
import { MIGRATIONS } from "../store/migrations.js";
import { openSqliteFile } from "../store/open-database.js";
import { SECRET_FILES } from "../store/restrict-data-dir.js";

const run = promisify(execFile);

export const DOCTOR_HELP = `usage: paddock doctor [flags of paddock serve]

Checks what \`paddock serve\` with the same flags, environment and config file needs: git,
the data dir (owner, 0700, secret files 0600, writable), its lock, the database's schema,
the Docker engine, the sandbox images, the runtime, and iptables for network enforcement.
Prints one line per check (ok, warn, FAIL); exits 1 when any check fails.`;

export type CheckStatus = "ok" | "warn" | "FAIL";
export interface Check {
  status: CheckStatus;
  name: string;
  detail: string;
}

const ok = (name: string, detail: string): Check => ({ status: "ok", name, detail });
const warn = (name: string, detail: string): Check => ({ status: "warn", name, detail });
const fail = (name: string, detail: string): Check => ({ status: "FAIL", name, detail });
const message = (e: unknown) => ((e as { stderr?: string }).stderr?.trim() || (e as Error).message).split("\n")[0]!;

async function checkGit(): Promise<Check> {
  try {
    return ok("git", (await run("git", ["--version"])).stdout.trim());
  } catch (error) {
    return fail("git", (error as NodeJS.ErrnoException).code === "ENOENT" ? "git is not installed (every run checks a repository out with it)" : message(error));
  }
}

async function checkDataDir(dir: string): Promise<Check[]> {
  if (!existsSync(dir)) return [warn("data dir", `${dir} does not exist yet; paddock serve creates it (0700)`)];
  const checks: Check[] = [];
  const st = statSync(dir);
  const uid = process.getuid?.() ?? st.uid;
  if (!st.isDirectory()) return [fail("data dir", `${dir} is not a directory`)];
  if (st.uid !== uid) checks.push(fail("data dir", `${dir} belongs to uid ${st.uid}, not to this user (${uid}); run as its owner`));
  else if ((st.mode & 0o077) !== 0) checks.push(warn("data dir", `${dir} is mode ${(st.mode & 0o777).toString(8)}; paddock serve makes it 0700 at start`));
  const loose = SECRET_FILES.filter((f) => existsSync(join(dir, f)) && (statSync(join(dir, f)).mode & 0o077) !== 0);
  if (loose.length > 0) checks.push(warn("data dir", `readable by others: ${loose.join(", ")}; paddock serve makes them 0600 at start`));
  try {
    await access(dir, constants.W_OK);
  } catch {
    checks.push(fail("data dir", `${dir} is not writable by this user`));
  }
  if (checks.length === 0) checks.push(ok("data dir", `${dir}: owner ${uid}, mode 700, secret files 600, writable`));
  return checks;
}

async function checkLock(dir: string): Promise<Check> {
  if (!existsSync(dir)) return ok("lock", "no data dir, no daemon");
  try {
    (await lockDataDir(dir)).release();
    return ok("lock", "free: no daemon runs on this data dir");
  } catch (error) {
    if (error instanceof DataDirLockedError) return ok("lock", `held by the daemon running on it (${error.holderPid === null ? "pid not known yet" : `pid ${error.holderPid}`})`);
    return fail("lock", `cannot take or test the lock: ${message(error)}`);
  }
}

async function checkDatabase(dir: string): Promise<Check> {
  const path = join(dir, "paddock.db");
  if (!existsSync(path)) return ok("database", "none yet; made at the first start");
  const newest = MIGRATIONS[MIGRATIONS.length - 1]!.version;
  try {
    const db = await openSqliteFile(path);
    try {
      db.exec("PRAGMA busy_timeout = 2000");
      const v = db.prepare<{ v: number | null }>("SELECT max(version) AS v FROM schema_migrations").get()?.v ?? 0;
      if (v > newest) return fail("database", `schema version ${v} is newer than this paddock's (${newest}): upgrade paddock`);
      return ok("database", `schema version ${v}${v < newest ? ` (migrated to ${newest} at the next start)` : ""}`);
    } finally {
      db.close();
    }
  } catch (error) {
    return fail("database", `${path}: ${message(error)}`);
  }
}

async function checkDocker(config: Config): Promise<Check[]> {
  if (!existsSync(config.dockerSocket)) {
    return [warn("docker engine", `no socket at ${config.dockerSocket}: the docker provider is off, runs use the local provider (no isolation)`)];
  }
  const docker = new Docker({ socketPath: config.dockerSocket });
  let runtimes: string[];
  const checks: Check[] = [];
  try {
    const v = await docker.version();
    runtimes = Object.keys(((await docker.info()) as { Runtimes?: Record<string, unknown> }).Runtimes ?? {});
    checks.push(ok("docker engine", `Docker ${v.Version} (API ${v.ApiVersion}) at ${config.dockerSocket}`));
  } catch (error) {
    return [fail("docker engine", `${config.dockerSocket} does not answer: ${message(error)}`)];
  }
  for (const image of new Set([config.dockerImage, ...config.sandboxImages])) {
    try {
      const info = await docker.getImage(image).inspect();
      checks.push(ok("image", `${image} (${info.Id.slice(7, 19)}, ${Math.round(info.Size / 1e6)} MB)`));
    } catch {
      checks.push(fail("image", `${image} is not in the engine; build it (npm run images, see sandbox-images/) or load it`));
    }
  }
  checks.push(
    runtimes.includes(config.dockerRuntime)
      ? ok("runtime", `${config.dockerRuntime}`)
      : fail("runtime", `the engine has no runtime ${config.dockerRuntime} (it has: ${runtimes.join(", ")})`),
  );
  const problem = await firewallProblem();
  checks.push(problem === null ? ok("iptables", "the DOCKER-USER chain can be changed: sandbox networks are fenced") : fail("iptables", `${problem}: restricted networks cannot be enforced`));
  return checks;
}

/** Every check, in the order printed. */
export async function runChecks(config: Config): Promise<Check[]> {
  return [
    await checkGit(),
    ...(await checkDataDir(config.dataDir)),
    await checkLock(config.dataDir),
    await checkDatabase(config.dataDir),
    ...(await checkDocker(config)),
  ];
}

/** `paddock doctor`: a line per check; exit 1 when any failed. */
export async function doctor(config: Config, io: { out: (l: string) => void }): Promise<number> {
  const checks = await runChecks(config);
  for (const c of checks) io.out(`${c.status.padEnd(4)}  ${c.name.padEnd(13)} ${c.detail}`);
  const failed = checks.filter((c) => c.status === "FAIL").length;
  io.out(failed ? `${failed} check(s) failed` : "all checks passed");
  return failed ? EXIT.failed : EXIT.ok;
}
