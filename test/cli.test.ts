import { describe, expect } from "vitest";
import { EXIT, runClientCommand } from "../src/cli/commands.js";
import { test, type Daemon } from "./fixtures.js";

async function cli(d: Daemon | null, ...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  // Flags go before "--": what follows it is the agent's command line.
  const end = argv.includes("--") ? argv.indexOf("--") : argv.length;
  const args = d ? [...argv.slice(0, end), "--address", d.url, ...argv.slice(end)] : argv;
  const code = await runClientCommand(args, {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    env: d ? { PADDOCK_TOKEN: d.adminToken } : {},
    cwd: "/",
    defaultSocket: "/nonexistent/paddock.sock",
    signal: new AbortController().signal,
  });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

describe("the paddock CLI", () => {
  test("creates a task, runs it with --follow, and reports with exit codes that mean something", async ({ daemon, repo }) => {
    const created = await cli(daemon, "task", "create", "--title", "cli task", "--repo", repo, "--json");
    expect(created.code).toBe(EXIT.ok);
    const task = JSON.parse(created.out) as { id: string; origin: string };
    expect(task.origin).toBe("cli");

    const ok = await cli(daemon, "run", "start", task.id, "--follow", "--", "sh", "-c", "echo from-the-agent");
    expect(ok.code).toBe(EXIT.ok);
    expect(ok.out).toMatch(/^\s+\d+ from-the-agent$/m);
    expect(ok.err).toMatch(/: RUN_STATUS_COMPLETED|: COMPLETED/);

    const failed = await cli(daemon, "run", "start", task.id, "-f", "--", "sh", "-c", "exit 4");
    expect(failed.code).toBe(EXIT.failed);
    expect(failed.err).toContain("agent exited with code 4");

    const listed = await cli(daemon, "run", "list", "--task", task.id, "--json");
    expect(listed.out.split("\n").map((l) => JSON.parse(l).status)).toEqual(["RUN_STATUS_FAILED", "RUN_STATUS_COMPLETED"]);
    const shown = await cli(daemon, "run", "get", JSON.parse(listed.out.split("\n")[1]!).id);
    expect(shown.out).toMatch(/status:\s+COMPLETED\s+phase: cleaned/);
    // Every phase it went through, each with how long it took.
    expect(shown.out).toMatch(/phases: {3}queued \d+\.\d{3}s → provisioning \d+\.\d{3}s → running \d+\.\d{3}s → cleanup \d+\.\d{3}s$/m);
  });

  test("says what is wrong, with the exit code for it", async ({ daemon }) => {
    expect(await cli(daemon, "run", "get", "run_missing")).toMatchObject({ code: EXIT.notFound, err: expect.stringContaining('run "run_missing" not found') });
    expect(await cli(daemon, "task", "create", "--repo", "/tmp")).toMatchObject({ code: EXIT.usage, err: expect.stringContaining("--title is required") });
    expect(await cli(daemon, "run", "start", "task_x", "--timeout", "soon")).toMatchObject({ code: EXIT.usage, err: expect.stringContaining("--timeout") });
    expect(await cli(daemon, "run", "get", "a", "--bogus")).toMatchObject({ code: EXIT.usage });
    expect(await cli(null, "run", "list", "--address", "http://127.0.0.1:1")).toMatchObject({ code: EXIT.unavailable, err: expect.stringContaining("cannot reach the daemon") });
    expect((await cli(null, "run", "start", "--help")).out).toContain("--idempotency-key");
  });
});
