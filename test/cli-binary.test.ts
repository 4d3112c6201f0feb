import { execFileSync, spawn } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EXIT } from "../src/cli/exit.js";
import { tempDir } from "./fixtures.js";

/**
 * The CLI as shipped: the compiled binary, whose calls go over Bun's fetch (the sources
 * under Node use connect-node; test/cli.test.ts covers those). Same exit codes, same words.
 */
const ROOT = resolve(import.meta.dirname, "..");
const BIN = resolve(ROOT, "dist", "paddock");

function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((done) => {
    const child = spawn(BIN, args, { env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d));
    child.stderr.on("data", (d: Buffer) => (err += d));
    child.on("exit", (code) => done({ code, out, err }));
  });
}

describe("the compiled CLI", () => {
  const dir = tempDir("cli-binary");
  const dataDir = join(dir, "data");
  let daemon: ReturnType<typeof spawn> | undefined;

  beforeAll(async () => {
    if (!existsSync(BIN)) execFileSync("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: "inherit" });
    daemon = spawn(BIN, ["serve", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--docker-socket", join(dir, "no-docker.sock"), "--log-format", "json"], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    await new Promise<void>((ready, failed) => {
      daemon!.stderr!.on("data", (d: Buffer) => ((err += d), err.includes("paddock listening") && ready()));
      daemon!.on("exit", (code) => failed(new Error(`daemon exited with ${code}: ${err}`)));
    });
  }, 120_000);

  afterAll(async () => {
    if (daemon && daemon.exitCode === null) {
      const exited = new Promise((r) => daemon!.once("exit", r));
      daemon.kill("SIGTERM");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("talks to the daemon over its socket and says 'cannot reach the daemon' with exit 5 when there is none", async () => {
    const env = { PADDOCK_DATA_DIR: dataDir };
    const created = await run(["task", "create", "--title", "t", "--repo", ROOT, "--json"], env);
    expect(created.code, created.err).toBe(EXIT.ok);
    const id = (JSON.parse(created.out) as { id: string }).id;
    expect(await run(["task", "list"], env)).toMatchObject({ code: EXIT.ok, out: expect.stringContaining(id) });
    expect(await run(["run", "get", "run_missing"], env)).toMatchObject({ code: EXIT.notFound, err: expect.stringContaining('run "run_missing" not found') });

    // Nothing listening on the port, and no socket at the path: both are "unreachable".
    expect(await run(["run", "list", "--address", "http://127.0.0.1:1"])).toMatchObject({
      code: EXIT.unavailable,
      err: expect.stringContaining("cannot reach the daemon: connect ECONNREFUSED 127.0.0.1:1 [Unavailable]"),
    });
    expect(await run(["run", "list", "--address", `unix:${join(dir, "none.sock")}`])).toMatchObject({
      code: EXIT.unavailable,
      err: expect.stringContaining("cannot reach the daemon: connect ENOENT"),
    });
  });
});
