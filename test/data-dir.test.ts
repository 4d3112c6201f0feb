import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, readdirSync, rmSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { TaskService } from "../src/gen/paddock/v1/task_pb.js";
import { cleanUp, gitEnv, startDaemon, tempDir } from "./fixtures.js";

/**
 * The real daemon, spawned: under Node (better-sqlite3) and under Bun (bun:sqlite, as in
 * the compiled binary), so the lock is proven across both drivers.
 */
const ROOT = resolve(import.meta.dirname, "..");
const RUNTIMES = {
  node: [process.execPath, "--import", "tsx", join(ROOT, "src", "main.ts")],
  bun: [join(ROOT, "node_modules", ".bin", "bun"), join(ROOT, "src", "main.ts")],
};

interface Spawned {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

const children: ChildProcess[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill("SIGKILL");
      await new Promise((r) => c.once("exit", r));
    }
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function serve(runtime: keyof typeof RUNTIMES, dataDir: string, opts: { umask?: string } = {}): Spawned {
  const [cmd, ...args] = RUNTIMES[runtime];
  // No Docker engine for these daemons: the lock and the modes are all they are here for.
  const serveArgs = ["serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--log-format", "json", "--docker-socket", join(dataDir, "no-docker.sock")];
  const child = opts.umask
    ? spawn("sh", ["-c", `umask ${opts.umask} && exec "$@"`, "sh", cmd!, ...args, ...serveArgs], { cwd: ROOT, env: gitEnv, stdio: ["ignore", "ignore", "pipe"] })
    : spawn(cmd!, [...args, ...serveArgs], { cwd: ROOT, env: gitEnv, stdio: ["ignore", "ignore", "pipe"] });
  children.push(child);
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return { child, stderr: () => err, exited };
}

/** Resolves once the daemon says it listens; rejects with its stderr if it exits first. */
function listening(s: Spawned): Promise<void> {
  return new Promise((ok, fail) => {
    const check = () => {
      if (s.stderr().includes("paddock listening on")) ok();
    };
    s.child.stderr!.on("data", check);
    check();
    void s.exited.then((code) => fail(new Error(`paddock serve exited with ${code}: ${s.stderr()}`)));
  });
}

/** A call over the data dir's unix socket: proves which daemon owns it. */
async function tasksOverSocket(dataDir: string) {
  const transport = createConnectTransport({ baseUrl: "http://localhost", httpVersion: "1.1", nodeOptions: { socketPath: join(dataDir, "paddock.sock") } });
  return (await createClient(TaskService, transport).listTasks({})).tasks;
}

const modeOf = (path: string) => statSync(path).mode & 0o777;

describe("one daemon per data dir", () => {
  it("a second daemon exits at once naming the first's pid, leaving its socket alone; after a SIGKILL of the first one starts", async () => {
    const dataDir = tempDir("lock");
    dirs.push(dataDir);
    const first = serve("node", dataDir);
    await listening(first);
    expect(await tasksOverSocket(dataDir)).toEqual([]);

    const second = serve("bun", dataDir);
    expect(await second.exited).toBe(1);
    expect(second.stderr()).toContain(`the data dir ${dataDir} is in use by another paddock daemon (pid ${first.child.pid})`);
    expect(second.stderr()).not.toContain("paddock listening");
    // The first still owns its socket and database.
    expect(await tasksOverSocket(dataDir)).toEqual([]);
    // The other driver refuses too.
    const third = serve("node", dataDir);
    expect(await third.exited).toBe(1);
    expect(third.stderr()).toContain(`(pid ${first.child.pid})`);

    // No stale lock to clean by hand: the kernel drops it with the process.
    first.child.kill("SIGKILL");
    await first.exited;
    const next = serve("bun", dataDir);
    await listening(next);
    expect(await tasksOverSocket(dataDir)).toEqual([]);
    const fourth = serve("node", dataDir);
    expect(await fourth.exited).toBe(1);
    expect(fourth.stderr()).toContain(`(pid ${next.child.pid})`);
    next.child.kill("SIGTERM");
    expect(await next.exited).toBe(0);
    expect(existsSync(join(dataDir, "daemon.pid"))).toBe(false);
  });

  it("within one process too: a second app on the same data dir is refused until the first stops", async () => {
    const first = await startDaemon();
    try {
      await expect(startDaemon({ dataDir: first.dataDir })).rejects.toThrow(`in use by another paddock daemon (pid ${process.pid})`);
    } finally {
      await first.app.stop();
    }
    const again = await startDaemon({ dataDir: first.dataDir });
    await cleanUp(again);
  });
});

describe("file modes in the data dir", () => {
  it("a first start under umask 000 makes the data dir 0700 and the database, WAL and every key and token file 0600", async () => {
    const dataDir = join(tempDir("modes"), "data");
    dirs.push(resolve(dataDir, ".."));
    const daemon = serve("node", dataDir, { umask: "000" });
    await listening(daemon);
    expect(modeOf(dataDir)).toBe(0o700);
    const files = ["paddock.db", "paddock.db-wal", "paddock.db-shm", "admin-token", "secrets.key", "sandbox-token.key", "daemon.lock", "daemon.pid"];
    for (const f of files) expect({ f, mode: modeOf(join(dataDir, f)).toString(8) }).toEqual({ f, mode: "600" });
    // Nothing else in the data dir is readable by other users, the public key aside.
    const loose = readdirSync(dataDir).filter((f) => f !== "sandbox-token.pub" && (modeOf(join(dataDir, f)) & 0o077) !== 0 && !statSync(join(dataDir, f)).isSocket());
    expect(loose).toEqual([]);
    daemon.child.kill("SIGTERM");
    expect(await daemon.exited).toBe(0);
  });

  it("a start fixes an older install's 0755 data dir and 0644 database, WAL and secret files", async () => {
    const dataDir = tempDir("old-install");
    const old = serve("node", dataDir);
    await listening(old);
    // A crash leaves the WAL files behind; an older paddock (or a loose umask) left these modes.
    old.child.kill("SIGKILL");
    await old.exited;
    chmodSync(dataDir, 0o755);
    const files = ["paddock.db", "paddock.db-wal", "paddock.db-shm", "admin-token", "secrets.key", "sandbox-token.key", "daemon.lock", "daemon.pid"];
    for (const f of files) chmodSync(join(dataDir, f), 0o644);

    const daemon = await startDaemon({ dataDir });
    try {
      expect(modeOf(dataDir)).toBe(0o700);
      for (const f of files) expect({ f, mode: modeOf(join(dataDir, f)).toString(8) }).toEqual({ f, mode: "600" });
      // And it is the same install: the old admin token still works.
      expect((await daemon.tasks.listTasks({})).tasks).toEqual([]);
    } finally {
      await cleanUp(daemon);
    }
  });
});
