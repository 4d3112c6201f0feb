import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, rmSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { Writable } from "node:stream";
import { beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../src/logger.js";
import { renderUnit } from "../src/systemd/unit.js";
import { TaskService } from "../src/gen/paddock/v1/task_pb.js";
import { TaskRunService } from "../src/gen/paddock/v1/task_run_pb.js";
import { bearer, freePort, gitEnv, makeGitRepo, spawnServe, tempDir } from "./fixtures.js";

const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "dist", "paddock");
const has = (cmd: string) => spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;
// CI installs both (.ci/run); elsewhere a machine without them skips these.
const canVerify = has("systemd-analyze") || !!process.env.CI;
const canListen = has("python3") || !!process.env.CI;

beforeAll(() => {
  execFileSync("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: "inherit" });
}, 120_000);

describe("the systemd unit", () => {
  it("in the repository is the one install-systemd writes", () => {
    expect(readFileSync(join(ROOT, "systemd", "paddock.service"), "utf8")).toBe(renderUnit());
    expect(execFileSync(BIN, ["install-systemd", "--dry-run", "--binary", "/usr/local/bin/paddock"], { encoding: "utf8" })).toBe(renderUnit());
  });

  it.runIf(canVerify)("passes systemd-analyze verify, as install-systemd writes it for this binary", () => {
    const dir = tempDir("unit");
    try {
      const path = join(dir, "paddock.service");
      const out = execFileSync(BIN, ["install-systemd", "--path", path], { encoding: "utf8" });
      expect(out).toContain(`wrote ${path} (starts ${BIN})`);
      expect(statSync(path).mode & 0o777).toBe(0o644);
      expect(readFileSync(path, "utf8")).toContain(`ExecStart=${BIN} serve\n`);
      // verify exits non-zero and says why on any error (unknown setting, bad value, missing binary).
      const r = spawnSync("systemd-analyze", ["verify", path], { encoding: "utf8" });
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("install-systemd refuses a relative binary and a directory that is not there", () => {
    expect(spawnSync(BIN, ["install-systemd", "--dry-run", "--binary", "paddock"]).status).toBe(2);
    const r = spawnSync(BIN, ["install-systemd", "--path", "/nonexistent-dir/paddock.service"], { encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("/nonexistent-dir does not exist");
  });
});

/** A unix datagram socket that systemd would own: python3 binds it and prints each message as a JSON line. */
async function notifyListener(path: string): Promise<{ messages: string[]; next: (want: RegExp) => Promise<string>; child: ChildProcess }> {
  const child = spawn("python3", ["-u", "-c", `
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("bound", flush=True)
while True:
    print(json.dumps(s.recv(65536).decode()), flush=True)
`, path], { stdio: ["ignore", "pipe", "inherit"] });
  const messages: string[] = [];
  const waiters: (() => void)[] = [];
  const lines = createInterface({ input: child.stdout! });
  await new Promise<void>((ok) => lines.once("line", () => ok()));
  lines.on("line", (l) => {
    messages.push(JSON.parse(l) as string);
    for (const w of waiters.splice(0)) w();
  });
  let seen = 0;
  const next = async (want: RegExp): Promise<string> => {
    for (;;) {
      while (seen < messages.length) {
        const m = messages[seen++]!;
        if (want.test(m)) return m;
      }
      await new Promise<void>((ok) => waiters.push(ok));
    }
  };
  return { messages, next, child };
}

describe.runIf(canListen)("sd_notify from the compiled binary", () => {
  it("READY=1 once listening, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 at SIGTERM, then exit 0", async () => {
    const dir = tempDir("notify");
    const socket = join(dir, "notify.sock");
    const listener = await notifyListener(socket);
    let daemon: ChildProcess | undefined;
    try {
      const port = await freePort();
      daemon = await spawnServe([BIN], ["--data-dir", join(dir, "data"), "--listen", `127.0.0.1:${port}`, "--log-format", "json"], {
        env: { ...gitEnv, NOTIFY_SOCKET: socket, WATCHDOG_USEC: "200000", WATCHDOG_PID: "" },
      });
      const ready = await listener.next(/^READY=1/);
      expect(ready).toBe(`READY=1\nMAINPID=${daemon.pid}\nSTATUS=listening on http://127.0.0.1:${port} and unix:${join(dir, "data", "paddock.sock")}`);
      // Only after READY: systemd would otherwise count the watchdog from the start.
      expect(await listener.next(/^WATCHDOG=1$/)).toBe("WATCHDOG=1");
      expect(await listener.next(/^WATCHDOG=1$/)).toBe("WATCHDOG=1");

      // The service's variables are the daemon's alone: an agent cannot speak for the service.
      const transport = createConnectTransport({ baseUrl: `http://127.0.0.1:${port}`, httpVersion: "1.1", interceptors: [bearer(readFileSync(join(dir, "data", "admin-token"), "utf8").trim())] });
      const repo = makeGitRepo();
      try {
        const { task } = await createClient(TaskService, transport).createTask({ title: "env", repository: repo });
        const runs = createClient(TaskRunService, transport);
        const { run } = await runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", 'echo "notify=${NOTIFY_SOCKET:-none} watchdog=${WATCHDOG_USEC:-none}"'] });
        for await (const res of runs.watchRun({ runId: run!.id }, { timeoutMs: 60_000 })) if (res.run!.phase === "cleaned") break;
        const lines: string[] = [];
        for await (const res of runs.streamLogs({ runId: run!.id })) lines.push(...res.entries.map((e) => e.text));
        expect(lines).toContain("notify=none watchdog=none");
      } finally {
        rmSync(repo, { recursive: true, force: true });
      }
      const exit = new Promise<number | null>((ok) => daemon!.once("exit", (code) => ok(code)));
      daemon.kill("SIGTERM");
      expect(await listener.next(/^STOPPING=1/)).toBe("STOPPING=1\nSTATUS=shutting down (SIGTERM); live runs resume at the next start");
      expect(await exit).toBe(0);
      expect(listener.messages.findIndex((m) => m.startsWith("READY=1"))).toBe(0);
    } finally {
      if (daemon?.exitCode === null) daemon.kill("SIGKILL");
      listener.child.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a watchdog meant for another process (WATCHDOG_PID) is not answered; no NOTIFY_SOCKET, no messages", async () => {
    const dir = tempDir("notify");
    const socket = join(dir, "notify.sock");
    const listener = await notifyListener(socket);
    try {
      const port = await freePort();
      const daemon = await spawnServe([BIN], ["--data-dir", join(dir, "data"), "--listen", `127.0.0.1:${port}`, "--log-format", "json"], {
        env: { ...gitEnv, NOTIFY_SOCKET: socket, WATCHDOG_USEC: "100000", WATCHDOG_PID: "1" },
      });
      await listener.next(/^READY=1/);
      const exit = new Promise<number | null>((ok) => daemon.once("exit", (code) => ok(code)));
      daemon.kill("SIGTERM");
      await listener.next(/^STOPPING=1/);
      expect(await exit).toBe(0);
      expect(listener.messages.filter((m) => m === "WATCHDOG=1")).toEqual([]);
    } finally {
      listener.child.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("journal log format", () => {
  it("prefixes each JSON line with its syslog priority", async () => {
    const lines: string[] = [];
    const destination = new Writable({ write: (chunk: Buffer, _e, done) => (lines.push(chunk.toString()), done()) });
    const logger = await createLogger({ level: "debug", format: "auto", isTty: false, isJournal: true, destination });
    logger.debug("d");
    logger.info({ runId: "run_1" }, "i");
    logger.warn("w");
    logger.error("e");
    logger.fatal("f");
    expect(lines.map((l) => l.slice(0, 3))).toEqual(["<7>", "<6>", "<4>", "<3>", "<2>"]);
    expect(JSON.parse(lines[1]!.slice(3))).toMatchObject({ level: 30, runId: "run_1", msg: "i" });
    expect(existsSync(BIN)).toBe(true);
  });
});
