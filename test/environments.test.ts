import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import Database from "better-sqlite3";
import { createDecipheriv } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect } from "vitest";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { TokenService } from "../src/gen/paddock/v1/token_pb.js";
import { allLogs, bearer, failureOf, test, watchToEnd, type Daemon } from "./fixtures.js";

const SECRET = "s3cr3t-value-for-the-agent";
const SETUP_SECRET = "setup-only-registry-password";

const envClient = (d: Daemon, token = d.adminToken) =>
  createClient(EnvironmentService, createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(token)] }));

const stringify = (x: unknown) => JSON.stringify(x, (_, v: unknown) => (typeof v === "bigint" ? String(v) : v));

async function makeEnv(d: Daemon, extra: { setupScript?: string; repositories?: string[] } = {}) {
  const res = await envClient(d).createEnvironment({
    environment: { name: `env ${Date.now()}`, networkAccess: NetworkAccess.CUSTOM, allowedDomains: ["registry.npmjs.org", "*.internal.example"], envVars: { GREETING: "hello" }, ...extra },
    secrets: [
      { name: "API_KEY", value: SECRET },
      { name: "REGISTRY_PASSWORD", value: SETUP_SECRET, setupOnly: true },
    ],
  });
  return res.environment!;
}

describe("environments", () => {
  test("are created with write-only secrets: names come back, values never", async ({ daemon }) => {
    const env = await makeEnv(daemon);
    expect(env.secrets.map((s) => [s.name, s.setupOnly])).toEqual([["API_KEY", false], ["REGISTRY_PASSWORD", true]]);
    expect(env.envVars).toEqual({ GREETING: "hello" });
    const c = envClient(daemon);
    const seen = stringify([env, await c.getEnvironment({ environmentId: env.id }), await c.listEnvironments({})]);
    expect(seen).not.toContain(SECRET);
    expect(seen).not.toContain(SETUP_SECRET);

    const ports = ["git.example.com:8443", "*.corp.test:8080"];
    expect((await c.updateEnvironment({ environment: { ...env, allowedDomains: ports } })).environment!.allowedDomains).toEqual(ports);

    const updated = await c.updateEnvironment({ environment: { ...env, envVars: { GREETING: "hi" } }, setSecrets: [{ name: "OTHER", value: "another-secret" }], removeSecrets: ["API_KEY"] });
    expect(updated.environment!.secrets.map((s) => s.name)).toEqual(["OTHER", "REGISTRY_PASSWORD"]);
    expect(updated.environment!.envVars).toEqual({ GREETING: "hi" });
    await c.deleteEnvironment({ environmentId: env.id });
    expect((await failureOf(c.getEnvironment({ environmentId: env.id }))).code).toBe(Code.NotFound);
  });

  test("reject bad input naming the field, and leave what is stored intact", async ({ daemon }) => {
    const c = envClient(daemon);
    const cases: [Parameters<typeof c.createEnvironment>[0], RegExp][] = [
      [{ environment: { name: "" } }, /^environment\.name: /],
      [{ environment: { name: "x", networkAccess: NetworkAccess.CUSTOM } }, /^environment\.allowed_domains: custom network access needs/],
      [{ environment: { name: "x", networkAccess: NetworkAccess.CUSTOM, allowedDomains: ["not a domain"] } }, /^environment\.allowed_domains\[0\]: /],
      [{ environment: { name: "x", networkAccess: NetworkAccess.CUSTOM, allowedDomains: ["ok.example", "git.example.com:70000"] } }, /^environment\.allowed_domains\[1\]: "git\.example\.com:70000": the port must be a number from 1 to 65535/],
      [{ environment: { name: "x", networkAccess: NetworkAccess.CUSTOM, allowedDomains: ["git.example.com:0"] } }, /^environment\.allowed_domains\[0\]: .*port must be/],
      [{ environment: { name: "x", networkAccess: NetworkAccess.CUSTOM, allowedDomains: ["git.example.com:ssh"] } }, /^environment\.allowed_domains\[0\]: .*port must be/],
      [{ environment: { name: "x", envVars: { "1BAD": "v" } } }, /^environment\.env_vars: /],
      [{ environment: { name: "x", defaultProvider: "k8s" } }, /^environment\.default_provider: unknown provider/],
      [{ environment: { name: "x" }, secrets: [{ name: "K", value: "abc" }] }, /^secrets\[0\]\.value: must be 4 bytes/],
      [{ environment: { name: "x", envVars: { K: "v" } }, secrets: [{ name: "K", value: "abcd" }] }, /^secrets\[0\]\.name: K is also a plain env var/],
    ];
    for (const [req, message] of cases) {
      const e = await failureOf(c.createEnvironment(req));
      expect(e.code).toBe(Code.InvalidArgument);
      expect(e.rawMessage).toMatch(message);
      expect(e.rawMessage).not.toContain("abcd");
    }
    expect((await c.listEnvironments({})).environments).toEqual([]);
  });

  test("another team cannot see or use them", async ({ daemon, repo }) => {
    const env = await makeEnv(daemon);
    const admin = createClient(TokenService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", interceptors: [bearer(daemon.adminToken)] }));
    const { secret } = await admin.createToken({ team: "other", name: "o", scopes: ["tasks:read", "tasks:write", "environments:write"] });
    const other = envClient(daemon, secret);
    // environments:write is needed to change environments; reading takes tasks:read.
    const reader = (await admin.createToken({ team: "default", name: "r", scopes: ["tasks:read"] })).secret;
    expect((await failureOf(envClient(daemon, reader).createEnvironment({ environment: { name: "nope" } }))).code).toBe(Code.PermissionDenied);
    expect((await envClient(daemon, reader).getEnvironment({ environmentId: env.id })).environment!.id).toBe(env.id);
    expect((await failureOf(other.getEnvironment({ environmentId: env.id }))).code).toBe(Code.NotFound);
    expect((await other.listEnvironments({})).environments).toEqual([]);
    const tasks = createClient((await import("../src/gen/paddock/v1/task_pb.js")).TaskService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", interceptors: [bearer(secret)] }));
    const e = await failureOf(tasks.createTask({ title: "t", repository: repo, environmentId: env.id }));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.rawMessage).toMatch(/^environment_id: no environment/);
  });

  test("a run gets env vars and secrets, setup-only ones only in setup, and every secret is redacted from its log", async ({ daemon, repo }) => {
    const env = await makeEnv(daemon, {
      setupScript: 'echo "setup sees [$REGISTRY_PASSWORD] [$API_KEY]"; echo prepared > .setup-done',
      repositories: [repo],
    });
    const { task } = await daemon.tasks.createTask({ title: "use env", repository: repo, environmentId: env.id });
    const agent = ["sh", "-c", 'echo "agent sees [$GREETING] [$API_KEY] [${REGISTRY_PASSWORD:-none}]"; cat .setup-done'];
    const { run } = await daemon.runs.startRun({ taskId: task!.id, agentCommand: agent });
    expect(run!).toMatchObject({ environmentId: env.id, networkPolicyEnforced: false });
    const final = (await watchToEnd(daemon, run!.id)).pop()!;
    expect(final.status).toBe(RunStatus.COMPLETED);
    const lines = await allLogs(daemon, run!.id);
    expect(lines.filter((l) => l.stream === "setup").map((l) => l.text)).toEqual(["setup sees [[secret:REGISTRY_PASSWORD]] [[secret:API_KEY]]"]);
    expect(lines.filter((l) => l.stream === "stdout").map((l) => l.text)).toEqual(["agent sees [hello] [[secret:API_KEY]] [none]", "prepared"]);
    const everything = stringify([lines, final, run]) + daemon.logs.join("\n");
    expect(everything).not.toContain(SECRET);
    expect(everything).not.toContain(SETUP_SECRET);
  });

  test("a failing setup script fails the run with its exit code, and the agent never starts", async ({ daemon, repo }) => {
    const env = await makeEnv(daemon, { setupScript: "echo installing; exit 3" });
    const { task } = await daemon.tasks.createTask({ title: "setup fails", repository: repo, environmentId: env.id });
    const { run } = await daemon.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", "echo AGENT-RAN"] });
    const final = (await watchToEnd(daemon, run!.id)).pop()!;
    expect(final).toMatchObject({ status: RunStatus.FAILED, errorMessage: "setup script exited with code 3", exitCode: 3 });
    const texts = (await allLogs(daemon, run!.id)).map((l) => l.text);
    expect(texts).toContain("installing");
    expect(texts).not.toContain("AGENT-RAN");
  });

  test("an environment limited to other repositories is refused for a task", async ({ daemon, repo }) => {
    const env = await makeEnv(daemon, { repositories: ["/somewhere/else"] });
    const e = await failureOf(daemon.tasks.createTask({ title: "t", repository: repo, environmentId: env.id }));
    expect(e.code).toBe(Code.InvalidArgument);
    expect(e.rawMessage).toMatch(/^environment_id: environment .* does not allow the repository/);
  });

  test("the key file and the database together decrypt a secret; the database alone does not", async ({ daemon }) => {
    const env = await makeEnv(daemon);
    const keyPath = join(daemon.dataDir, "secrets.key");
    expect(statSync(keyPath).mode & 0o777).toBe(0o600);
    const db = new Database(join(daemon.dataDir, "paddock.db"), { readonly: true });
    const { sealed } = db.prepare("SELECT sealed FROM environment_secrets WHERE environment_id = ? AND name = 'API_KEY'").get(env.id) as { sealed: string };
    const dump = (db.prepare("SELECT group_concat(sealed) AS s FROM environment_secrets").get() as { s: string }).s;
    db.close();
    expect(dump).not.toContain(SECRET);
    const open = (key: Buffer) => {
      const [, iv, ct, tag] = sealed.split(".");
      const d = createDecipheriv("aes-256-gcm", key, Buffer.from(iv!, "base64url"));
      d.setAAD(Buffer.from(`${env.id}/API_KEY`));
      d.setAuthTag(Buffer.from(tag!, "base64url"));
      return Buffer.concat([d.update(Buffer.from(ct!, "base64url")), d.final()]).toString("utf8");
    };
    expect(open(Buffer.from(readFileSync(keyPath, "utf8").trim(), "base64"))).toBe(SECRET);
    expect(() => open(Buffer.alloc(32, 7))).toThrow();
  });

  test("a brokered secret: its rule comes back (never its value), a bad rule names its field, the local provider refuses it with the reason", async ({ daemon, repo }) => {
    const c = envClient(daemon);
    const { environment } = await c.createEnvironment({
      environment: { name: "brokered", networkAccess: NetworkAccess.FULL, defaultProvider: "local" },
      secrets: [{ name: "MODEL_KEY", value: SECRET, broker: { host: "api.example.com", header: "X-Api-Key", pathPrefix: "/v1/" } }],
    });
    expect(environment!.secrets[0]!.broker).toMatchObject({ host: "api.example.com", header: "x-api-key", template: "{value}", pathPrefix: "/v1/", basicUsername: "" });
    expect(stringify(await c.getEnvironment({ environmentId: environment!.id }))).not.toContain(SECRET);

    const bad = await failureOf(c.createEnvironment({ environment: { name: "bad" }, secrets: [{ name: "K", value: SECRET, broker: { host: "api.example.com", header: "x-api-key", template: "Bearer" } }] }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.rawMessage).toMatch(/^secrets\[0\]\.broker\.template: /);
    const newline = await failureOf(c.createEnvironment({ environment: { name: "bad" }, secrets: [{ name: "K", value: "zq9-value\nzq9-rest", broker: { host: "api.example.com", header: "x-api-key" } }] }));
    expect(newline.rawMessage).toMatch(/^secrets\[0\]\.value: /);
    expect(newline.rawMessage).not.toContain("zq9");

    const { task } = await daemon.tasks.createTask({ title: "t", repository: repo, environmentId: environment!.id });
    const refused = await failureOf(daemon.runs.startRun({ taskId: task!.id, agentCommand: ["true"] }));
    expect(refused.code).toBe(Code.InvalidArgument);
    expect(refused.rawMessage).toMatch(/^provider: the environment's brokered secrets \(MODEL_KEY\) need a provider that forces .* the local provider runs the agent on the host/);
  });
});
