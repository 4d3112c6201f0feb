import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect } from "vitest";
import { Health } from "../src/gen/grpc/health/v1/health_pb.js";
import { TaskService } from "../src/gen/paddock/v1/task_pb.js";
import { TaskRunService } from "../src/gen/paddock/v1/task_run_pb.js";
import { TokenService } from "../src/gen/paddock/v1/token_pb.js";
import { execFileSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { createApiTokens } from "../src/auth/api-tokens.js";
import { migrate } from "../src/store/migrations.js";
import { openNodeSqlite } from "../src/store/sqlite-node.js";
import { createTokensRepository } from "../src/store/tokens-repository.js";
import { bearer, cleanUp, failureOf, startDaemon, tempDir, test, watchToEnd, type Daemon } from "./fixtures.js";

function clientsWith(d: Daemon, token: string | null) {
  const transport = createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: token ? [bearer(token)] : [] });
  return { tasks: createClient(TaskService, transport), runs: createClient(TaskRunService, transport), tokens: createClient(TokenService, transport) };
}

async function tokenFor(d: Daemon, team: string, scopes: string[]) {
  const admin = createClient(TokenService, createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(d.adminToken)] }));
  const res = await admin.createToken({ team, name: `${team} ${scopes.join(" ")}`, scopes });
  return { secret: res.secret, id: res.token!.id };
}

describe("API authentication", () => {
  test("the first start writes an admin token to a 0600 file; TCP calls without a valid token are UNAUTHENTICATED", async ({ daemon }) => {
    expect(statSync(join(daemon.dataDir, "admin-token")).mode & 0o777).toBe(0o600);
    for (const token of [null, "nonsense", `pdk_${"0".repeat(16)}_${"a".repeat(32)}`, daemon.adminToken.slice(0, -1) + (daemon.adminToken.endsWith("A") ? "B" : "A")]) {
      const e = await failureOf(clientsWith(daemon, token).tasks.listTasks({}));
      expect(e.code).toBe(Code.Unauthenticated);
    }
    // Health stays open.
    const health = createClient(Health, createGrpcTransport({ baseUrl: daemon.url }));
    expect((await health.check({})).status).toBe(1);
  });

  test("each scope opens only its methods: PERMISSION_DENIED outside it", async ({ daemon, repo }) => {
    const reader = clientsWith(daemon, (await tokenFor(daemon, "default", ["tasks:read", "runs:read"])).secret);
    const writer = clientsWith(daemon, (await tokenFor(daemon, "default", ["tasks:write", "runs:write"])).secret);
    expect((await failureOf(reader.tasks.createTask({ title: "t", repository: repo }))).code).toBe(Code.PermissionDenied);
    const { task } = await writer.tasks.createTask({ title: "t", repository: repo });
    expect(task!.team).toBe("default");
    expect((await reader.tasks.getTask({ taskId: task!.id })).task!.id).toBe(task!.id);
    expect((await failureOf(writer.tasks.getTask({ taskId: task!.id }))).code).toBe(Code.PermissionDenied);
    const { run } = await writer.runs.startRun({ taskId: task!.id, agentCommand: ["true"] });
    expect((await failureOf(reader.runs.cancelRun({ runId: run!.id }))).code).toBe(Code.PermissionDenied);
    expect((await failureOf(writer.tokens.listTokens({}))).message).toMatch(/lacks the scope admin/);
    await watchToEnd(daemon, run!.id);
  });

  test("a team never sees another team's tasks, runs or logs: NOT_FOUND, as if they did not exist", async ({ daemon, repo }) => {
    const red = clientsWith(daemon, (await tokenFor(daemon, "red", ["tasks:read", "tasks:write", "runs:read", "runs:write"])).secret);
    const blue = clientsWith(daemon, (await tokenFor(daemon, "blue", ["tasks:read", "tasks:write", "runs:read", "runs:write"])).secret);
    const { task } = await red.tasks.createTask({ title: "red's", repository: repo });
    const { run } = await red.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", "echo secret-ish output"] });
    for await (const _ of red.runs.watchRun({ runId: run!.id })) void _; // until cleaned
    const notFound = async (p: Promise<unknown>) => expect((await failureOf(p)).code).toBe(Code.NotFound);
    await notFound(blue.tasks.getTask({ taskId: task!.id }));
    await notFound(blue.runs.getRun({ runId: run!.id }));
    await notFound(blue.runs.startRun({ taskId: task!.id, agentCommand: ["true"] }));
    await notFound(blue.runs.cancelRun({ runId: run!.id }));
    await notFound((async () => { for await (const _ of blue.runs.streamLogs({ runId: run!.id })) void _; })());
    await notFound((async () => { for await (const _ of blue.runs.watchRun({ runId: run!.id })) void _; })());
    expect((await blue.tasks.listTasks({})).tasks).toEqual([]);
    expect((await blue.runs.listRuns({})).runs).toEqual([]);
    expect((await red.runs.listRuns({})).runs.map((r) => r.id)).toEqual([run!.id]);
    // The admin token belongs to team "default": it does not see red's either.
    expect((await daemon.tasks.listTasks({})).tasks).toEqual([]);
  });

  test("a revoked token is refused; listed tokens never show a secret", async ({ daemon }) => {
    const { secret, id } = await tokenFor(daemon, "default", ["tasks:read"]);
    const c = clientsWith(daemon, secret);
    await c.tasks.listTasks({});
    const admin = clientsWith(daemon, daemon.adminToken);
    const listed = await admin.tokens.listTokens({});
    expect(JSON.stringify(listed, (_, v: unknown) => (typeof v === "bigint" ? String(v) : v))).not.toContain(secret.slice(-32));
    expect(listed.tokens.find((t) => t.id === id)?.lastUsedTime).toBeDefined();
    await admin.tokens.revokeToken({ tokenId: id });
    expect((await failureOf(c.tasks.listTasks({}))).code).toBe(Code.Unauthenticated);
    const bad = await failureOf(admin.tokens.createToken({ team: "x", scopes: ["root"] }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.rawMessage).toMatch(/^scopes: unknown scope "root"/);
  });

  test("admin is per team: a team's admin cannot mint, list or revoke another team's tokens, nor grant instance:admin", async ({ daemon }) => {
    const webSecret = (await tokenFor(daemon, "web", ["admin"])).secret;
    const web = clientsWith(daemon, webSecret);
    const ops = await tokenFor(daemon, "ops", ["tasks:read"]);
    const denied = async (p: Promise<unknown>, message: RegExp) => {
      const e = await failureOf(p);
      expect(e.code).toBe(Code.PermissionDenied);
      expect(e.rawMessage).toMatch(message);
    };
    await denied(web.tokens.createToken({ team: "ops", name: "x", scopes: ["admin"] }), /team "ops": this token administers team "web" only; other teams need the scope instance:admin/);
    await denied(web.tokens.createToken({ team: "web", name: "x", scopes: ["instance:admin"] }), /only a holder of instance:admin may grant instance:admin/);
    await denied(web.tokens.listTokens({}), /listing every team's tokens needs the scope instance:admin; set team to "web"/);
    // The same refusal over gRPC.
    const webGrpc = createClient(TokenService, createGrpcTransport({ baseUrl: daemon.url, interceptors: [bearer(webSecret)] }));
    await denied(webGrpc.createToken({ team: "ops", name: "x", scopes: ["admin"] }), /team "ops"/);
    await denied(web.tokens.listTokens({ team: "ops" }), /team "ops"/);
    await denied(web.tokens.revokeToken({ tokenId: ops.id }), /revoking a token of team "ops"/);
    // ops' token still works; nothing was minted for ops.
    await clientsWith(daemon, ops.secret).tasks.listTasks({});
    const all = await clientsWith(daemon, daemon.adminToken).tokens.listTokens({});
    expect(all.tokens.filter((t) => t.team === "ops").map((t) => t.id)).toEqual([ops.id]);

    // Within its own team it is a full admin.
    const minted = await web.tokens.createToken({ team: "web", name: "ci", scopes: ["admin", "runs:write"] });
    expect((await web.tokens.listTokens({ team: "web" })).tokens.every((t) => t.team === "web")).toBe(true);
    await web.tokens.revokeToken({ tokenId: minted.token!.id });
    expect((await failureOf(clientsWith(daemon, minted.secret).tasks.listTasks({}))).code).toBe(Code.Unauthenticated);

    // An admin of "default" cannot revoke the instance's admin token, which lives in that team.
    const defaultAdmin = clientsWith(daemon, (await tokenFor(daemon, "default", ["admin"])).secret);
    const bootstrap = all.tokens.find((t) => t.name === "admin (made on first start)")!;
    expect(bootstrap.scopes).toEqual(["admin", "instance:admin"]);
    await denied(defaultAdmin.tokens.revokeToken({ tokenId: bootstrap.id }), /needs that scope/);
    await denied(defaultAdmin.tokens.listTokens({}), /needs the scope instance:admin/);
  });

  test("instance:admin (the first-start token, the unix socket) manages every team, and only it can grant instance:admin", async ({ daemon }) => {
    const instance = clientsWith(daemon, daemon.adminToken);
    const opsAdmin = await instance.tokens.createToken({ team: "ops", name: "ops admin", scopes: ["admin"] });
    expect((await instance.tokens.listTokens({ team: "ops" })).tokens.map((t) => t.id)).toEqual([opsAdmin.token!.id]);
    await instance.tokens.revokeToken({ tokenId: opsAdmin.token!.id });
    const local = createConnectTransport({ baseUrl: "http://localhost", httpVersion: "1.1", nodeOptions: { socketPath: join(daemon.dataDir, "p.sock") } });
    const second = await createClient(TokenService, local).createToken({ team: "default", name: "second operator", scopes: ["instance:admin"] });
    const teams = new Set((await clientsWith(daemon, second.secret).tokens.listTokens({})).tokens.map((t) => t.team));
    expect(teams).toEqual(new Set(["default", "ops"]));
  });

  test("an install from before per-team admin keeps its first-start token's instance powers", async () => {
    // The data dir as paddock at schema 6 left it: a first-start admin token, then another
    // team's token of the same name, both plain "admin".
    const dataDir = tempDir("old");
    const db = openNodeSqlite(join(dataDir, "paddock.db"));
    migrate(db, 6);
    const tokens = createApiTokens(createTokensRepository(db));
    const firstStart = tokens.create("default", "admin (made on first start)", ["admin"]);
    const other = tokens.create("web", "admin (made on first start)", ["admin"]);
    db.close();
    writeFileSync(join(dataDir, "admin-token"), firstStart.secret + "\n", { mode: 0o600 });
    const d = await startDaemon({ dataDir });
    try {
      const c = clientsWith(d, d.adminToken);
      expect((await c.tokens.listTokens({ team: "web" })).tokens.map((t) => t.id)).toEqual([other.record.id]);
      await c.tokens.createToken({ team: "ops", name: "x", scopes: ["tasks:read"] });
      // Only the first-start row was promoted, not a later one with the same name.
      expect((await c.tokens.listTokens({ team: "web" })).tokens[0]!.scopes).toEqual(["admin"]);
    } finally {
      await cleanUp(d);
    }
  });

  test("the unix socket is trusted as admin of the default team and instance admin", async ({ daemon }) => {
    const local = createConnectTransport({ baseUrl: "http://localhost", httpVersion: "1.1", nodeOptions: { socketPath: join(daemon.dataDir, "p.sock") } });
    expect((await createClient(TokenService, local).listTokens({})).tokens.length).toBeGreaterThan(0);
    expect(statSync(join(daemon.dataDir, "p.sock")).mode & 0o777).toBe(0o660);
  });

  test("with --tls-cert and --tls-key the TCP listener speaks TLS, gRPC and Connect alike", async ({ repo }) => {
    const dir = tempDir("tls");
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
    const d = await startDaemon({ config: { tlsCert: join(dir, "cert.pem"), tlsKey: join(dir, "key.pem") } });
    try {
      expect(d.url.startsWith("https://")).toBe(true);
      const { task } = await d.tasks.createTask({ title: "over tls", repository: repo });
      expect((await d.grpcRuns.listRuns({ taskId: task!.id })).runs).toEqual([]);
      // Plain HTTP to the TLS port gets nowhere.
      const plain = createClient(TaskService, createConnectTransport({ baseUrl: d.url.replace("https", "http"), httpVersion: "1.1", interceptors: [bearer(d.adminToken)] }));
      await failureOf(plain.listTasks({}, { timeoutMs: 5000 }));
    } finally {
      await cleanUp(d);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
