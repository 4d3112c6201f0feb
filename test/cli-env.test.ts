import { spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { describe, expect } from "vitest";
import { runnerCommand } from "../src/app.js";
import { EXIT, runClientCommand } from "../src/cli/commands.js";
import { tempDir, test, type Daemon } from "./fixtures.js";

async function cli(d: Daemon, argv: string[], opts: { stdin?: string; token?: string; cwd?: string } = {}) {
  const out: string[] = [];
  const err: string[] = [];
  // Flags go before "--": what follows it is the agent's command line.
  const end = argv.includes("--") ? argv.indexOf("--") : argv.length;
  const code = await runClientCommand([...argv.slice(0, end), "--address", d.url, ...argv.slice(end)], {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    env: { PADDOCK_TOKEN: opts.token ?? d.adminToken },
    cwd: opts.cwd ?? "/",
    defaultSocket: "/nonexistent/paddock.sock",
    signal: new AbortController().signal,
    stdio: { input: Readable.from(opts.stdin === undefined ? [] : [Buffer.from(opts.stdin)]), output: new Writable({ write: (_c, _e, cb) => cb() }) },
  });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/** The real CLI as its own process, so its argv is the one the system shows (/proc/PID/cmdline). */
function spawnCli(d: Daemon, argv: string[]) {
  const [exe, ...pre] = runnerCommand().slice(0, -1); // node + tsx + main.ts, without "agent"
  const child = spawn(exe!, [...pre, ...argv, "--address", d.url], { env: { ...process.env, PADDOCK_TOKEN: d.adminToken }, stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (err += c.toString()));
  const done = new Promise<{ code: number | null; out: string; err: string }>((res) => child.on("close", (code) => res({ code, out, err })));
  return { child, done };
}

const SECRET = "s3cr3t-value-9f1c2e";

describe("paddock env and token", () => {
  test("an environment's secret goes in on stdin and never shows in argv or any output", async ({ daemon }) => {
    const { child, done } = spawnCli(daemon, ["env", "create", "--name", "ci", "--network", "custom", "--allow", "*.example.test", "--var", "MODE=test", "--secret", "API_KEY", "--json"]);
    // The CLI is waiting on stdin now: what the system shows of it holds no secret.
    const cmdline = readFileSync(`/proc/${child.pid}/cmdline`, "utf8");
    expect(cmdline).toContain("API_KEY");
    expect(cmdline).not.toContain(SECRET);
    child.stdin.end(`${SECRET}\n`);
    const created = await done;
    expect(created.code, created.err).toBe(EXIT.ok);
    const env = JSON.parse(created.out) as { id: string; name: string; networkAccess: string; allowedDomains: string[]; envVars: Record<string, string>; secrets: { name: string }[] };
    expect(env).toMatchObject({ name: "ci", networkAccess: "NETWORK_ACCESS_CUSTOM", allowedDomains: ["*.example.test"], envVars: { MODE: "test" }, secrets: [{ name: "API_KEY" }] });

    const fileDir = tempDir("cli-env");
    try {
      writeFileSync(join(fileDir, "setup-token"), "setup-only-value-77\n");
      writeFileSync(join(fileDir, "setup.sh"), "echo setting up\n");
      const outputs = [created.out, created.err];
      for (const argv of [["env", "get", env.id], ["env", "get", env.id, "--json"], ["env", "list"], ["env", "list", "--json"]]) {
        const r = await cli(daemon, argv);
        expect(r.code, r.err).toBe(EXIT.ok);
        outputs.push(r.out, r.err);
      }
      expect((await cli(daemon, ["env", "get", env.id])).out).toMatch(/secrets:\s+API_KEY/);

      const updated = await cli(
        daemon,
        ["env", "update", env.id, "--name", "ci-2", "--secret", "API_KEY", "--setup-only-secret", "SETUP_TOKEN=@setup-token", "--setup-script", "setup.sh", "--unset-var", "MODE", "--var", "LEVEL=2", "--json"],
        { stdin: "a-new-secret-value-3\n", cwd: fileDir },
      );
      expect(updated.code, updated.err).toBe(EXIT.ok);
      outputs.push(updated.out, updated.err);
      expect(JSON.parse(updated.out)).toMatchObject({
        name: "ci-2",
        networkAccess: "NETWORK_ACCESS_CUSTOM",
        allowedDomains: ["*.example.test"],
        envVars: { LEVEL: "2" },
        setupScript: "echo setting up\n",
        secrets: expect.arrayContaining([expect.objectContaining({ name: "API_KEY" }), expect.objectContaining({ name: "SETUP_TOKEN", setupOnly: true })]),
      });
      expect(Object.keys(JSON.parse(updated.out).envVars)).toEqual(["LEVEL"]);

      const removed = await cli(daemon, ["env", "update", env.id, "--remove-secret", "SETUP_TOKEN", "--json"]);
      expect(removed.code, removed.err).toBe(EXIT.ok);
      expect(JSON.parse(removed.out).secrets.map((s: { name: string }) => s.name)).toEqual(["API_KEY"]);
      outputs.push(removed.out, removed.err);

      for (const o of outputs) for (const v of [SECRET, "a-new-secret-value-3", "setup-only-value-77"]) expect(o).not.toContain(v);
      for (const line of daemon.logs) for (const v of [SECRET, "a-new-secret-value-3", "setup-only-value-77"]) expect(line).not.toContain(v);
    } finally {
      rmSync(fileDir, { recursive: true, force: true });
    }

    expect(await cli(daemon, ["env", "delete", env.id])).toMatchObject({ code: EXIT.ok, out: `environment ${env.id} deleted` });
    expect(await cli(daemon, ["env", "get", env.id])).toMatchObject({ code: EXIT.notFound });
    expect((await cli(daemon, ["env", "list"])).out).toBe("");
  });

  test("every setting of an environment has a flag: setup network, repositories, agent, mode, permissions, idle timeout", async ({ daemon, repo }) => {
    const created = await cli(daemon, [
      "env", "create", "--name", "acp", "--setup-network", "full", "--repository", repo, "--repository", "owner/other",
      "--agent", "claude-code", "--mode", "interactive", "--permissions", "ask", "--idle-timeout", "15m", "--json",
    ]);
    expect(created.code, created.err).toBe(EXIT.ok);
    const env = JSON.parse(created.out) as { id: string };
    expect(env).toMatchObject({
      setupNetworkAccess: "NETWORK_ACCESS_FULL",
      repositories: [repo, "owner/other"],
      agent: { kind: "AGENT_KIND_ACP", preset: "claude-code" },
      mode: "RUN_MODE_INTERACTIVE",
      permissionPolicy: "PERMISSION_POLICY_ASK",
      idleTimeout: "900s",
    });
    const shown = (await cli(daemon, ["env", "get", env.id])).out;
    expect(shown).toContain(`repositories: ${repo}, owner/other`);
    expect(shown).toContain("agent:    ACP claude-code");
    expect(shown).toContain("mode:     interactive  permissions: ask");
    expect(shown).toContain("idle timeout: 900s");

    // A command agent cannot be interactive: the daemon says so, and the CLI exits 2.
    const refused = await cli(daemon, ["env", "update", env.id, "--agent-command", "sh", "--agent-command=-c", "--agent-command", "echo hi"]);
    expect(refused.code).toBe(EXIT.usage);
    expect(refused.err).toContain("interactive runs need an ACP agent");
    const updated = await cli(daemon, ["env", "update", env.id, "--agent-command", "sh", "--agent-command=-c", "--agent-command", "echo hi", "--mode", "background", "--any-repository", "--permissions", "deny", "--json"]);
    expect(updated.code, updated.err).toBe(EXIT.ok);
    const after = JSON.parse(updated.out) as Record<string, unknown>;
    expect(after).toMatchObject({ agent: { kind: "AGENT_KIND_COMMAND", command: ["sh", "-c", "echo hi"] }, mode: "RUN_MODE_BACKGROUND", permissionPolicy: "PERMISSION_POLICY_DENY" });
    expect(after.repositories ?? []).toEqual([]);
    const cleared = JSON.parse((await cli(daemon, ["env", "update", env.id, "--no-agent", "--json"])).out) as Record<string, unknown>;
    expect(cleared.agent).toBeUndefined();

    expect((await cli(daemon, ["env", "update", env.id, "--agent", "codex", "--no-agent"])).code).toBe(EXIT.usage);
    expect((await cli(daemon, ["env", "update", env.id, "--mode", "sometimes"])).err).toContain("--mode: \"sometimes\" is not one of background, interactive");
  });

  test("a task and a run name their environment; the agent gets the secret as piped in", async ({ daemon, repo }) => {
    const env = JSON.parse((await cli(daemon, ["env", "create", "--name", "plain", "--json"])).out) as { id: string };
    const task = await cli(daemon, ["task", "create", "--title", "t", "--repo", repo, "--environment", env.id, "--json"]);
    expect(task.code, task.err).toBe(EXIT.ok);
    expect(JSON.parse(task.out).environmentId).toBe(env.id);
    // The value read from stdin, its trailing newline stripped, is what the agent gets.
    const withSecret = JSON.parse((await cli(daemon, ["env", "create", "--name", "keyed", "--network", "full", "--secret", "API_KEY", "--json"], { stdin: `${SECRET}\n` })).out) as { id: string };
    const ran = await cli(daemon, ["run", "start", JSON.parse(task.out).id, "--environment", withSecret.id, "-f", "--", "sh", "-c", `test "$API_KEY" = ${SECRET} && echo same-value`]);
    expect(ran.code, ran.err + ran.out).toBe(EXIT.ok);
    expect(ran.out).toContain("same-value");
    const missing = await cli(daemon, ["run", "start", JSON.parse(task.out).id, "--environment", "env_missing", "--", "true"]);
    expect(missing.code).not.toBe(EXIT.ok);
    expect(missing.err).toContain("env_missing");
  });

  test("a token is created with its secret shown once, listed without it, and revoked", async ({ daemon }) => {
    const created = await cli(daemon, ["token", "create", "--team", "default", "--name", "ci", "--scope", "tasks:read", "--scope", "runs:read", "--json"]);
    expect(created.code, created.err).toBe(EXIT.ok);
    const { token, secret } = JSON.parse(created.out) as { token: { id: string; scopes: string[] }; secret: string };
    expect(token.scopes).toEqual(["tasks:read", "runs:read"]);
    expect(secret.length).toBeGreaterThan(16);

    expect(await cli(daemon, ["task", "list"], { token: secret })).toMatchObject({ code: EXIT.ok });
    const listed = await cli(daemon, ["token", "list", "--team", "default"]);
    expect(listed.code).toBe(EXIT.ok);
    expect(listed.out).toMatch(new RegExp(`^${token.id}\\s+default\\s+ci\\s+tasks:read,runs:read`, "m"));
    expect(listed.out + (await cli(daemon, ["token", "list", "--json"])).out).not.toContain(secret);

    const revoked = await cli(daemon, ["token", "revoke", token.id]);
    expect(revoked.code, revoked.err).toBe(EXIT.ok);
    expect(revoked.out).toMatch(/revoked: \d{4}-/);
    expect((await cli(daemon, ["task", "list"], { token: secret })).code).not.toBe(EXIT.ok);

    const text = await cli(daemon, ["token", "create", "--team", "default", "--name", "x", "--scope", "tasks:read"]);
    expect(text.out).toMatch(/^ {2}secret: {2}\S+$/m);
    expect(text.err).toContain("shown only this once");
  });

  test("--broker keeps a secret out of the sandbox: the rule is sent with the value and shown by env get", async ({ daemon }) => {
    const made = await cli(daemon, ["env", "create", "--name", "brokered", "--network", "full", "--secret", "MODEL_KEY", "--broker", "MODEL_KEY,host=api.example.com,header=authorization,template=Bearer {value},path=/v1/", "--json"], { stdin: `${SECRET}\n` });
    expect(made.code, made.err).toBe(0);
    const env = JSON.parse(made.out) as { id: string; secrets: { name: string; broker: Record<string, string> }[] };
    expect(env.secrets[0]!.broker).toMatchObject({ host: "api.example.com", header: "authorization", template: "Bearer {value}", pathPrefix: "/v1/" });
    expect((await cli(daemon, ["env", "get", env.id])).out).toContain("MODEL_KEY (brokered for api.example.com/v1/)");
    expect(await cli(daemon, ["env", "create", "--name", "y", "--broker", "OTHER,host=api.example.com,header=x"])).toMatchObject({ code: EXIT.usage, err: expect.stringContaining("--broker OTHER: give the secret with --secret OTHER") });
  });

  test("bad flags exit 2 naming the flag, and secret values on the command line are refused unseen", async ({ daemon }) => {
    const bad = await cli(daemon, ["env", "create", "--name", "x", "--network", "sometimes"]);
    expect(bad).toMatchObject({ code: EXIT.usage, err: expect.stringContaining("--network") });
    expect(await cli(daemon, ["env", "create", "--network", "full"])).toMatchObject({ code: EXIT.usage, err: expect.stringContaining("--name is required") });
    expect(await cli(daemon, ["env", "create", "--name", "x", "--timeout", "soon"])).toMatchObject({ code: EXIT.usage, err: expect.stringContaining("--timeout") });
    expect(await cli(daemon, ["env", "create", "--name", "x", "--var", "NOVALUE"])).toMatchObject({ code: EXIT.usage, err: expect.stringContaining("--var") });
    expect(await cli(daemon, ["env", "create", "--name", "x", "--secret", "A", "--secret", "B"], { stdin: "value-1" })).toMatchObject({
      code: EXIT.usage,
      err: expect.stringContaining("only one secret can come from stdin"),
    });
    expect(await cli(daemon, ["token", "create", "--team", "default", "--name", "x"])).toMatchObject({ code: EXIT.usage, err: expect.stringContaining("--scope") });

    const inline = await cli(daemon, ["env", "create", "--name", "x", "--secret", "API_KEY=hunter2-inline"]);
    expect(inline).toMatchObject({ code: EXIT.usage, err: expect.stringContaining("--secret API_KEY") });
    expect(inline.err).not.toContain("hunter2-inline");
    expect((await cli(daemon, ["env", "list"])).out).toBe("");
    expect((await cli(daemon, ["env", "update", "--help"])).out).toContain("--remove-secret");
  });
});
