import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { generateKeyPairSync } from "node:crypto";
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { gitHubAppAuth } from "../src/github/github-auth.js";
import { gitCredential } from "../src/sandbox/git-credentials.js";
import { git } from "../src/sandbox/git.js";
import { sourcePath } from "../src/sandbox/repository-source.js";
import { gitHubRepositoryOf, gitHubWebUrl } from "../src/runs/pull-requests.js";
import { bearer } from "../src/cli/client.js";
import { EXIT } from "../src/cli/commands.js";
import { startFakeGitHub, type FakeGitHub } from "./fake-github.js";
import Docker from "dockerode";
import { sandboxName } from "../src/sandbox/provider.js";
import { allLogs, cleanUp, cliIn, dockerAvailable, failureOf, makeGitRepo, startDaemon, tempDir, waitForPhase, watchToEnd, type Daemon } from "./fixtures.js";

const APP_ID = "4242";
const INSTALLATION = "77";

function rsaKey() {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return { privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(), publicPem: publicKey.export({ type: "spki", format: "pem" }).toString() };
}

/** Every file under dir (the daemon's data dir: database, mirrors, sandboxes), as bytes. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && statSync(p).size < 64 * 1024 * 1024) out.push(p);
    }
  };
  walk(dir);
  return out;
}


/** Writes its whole environment into the work, which becomes the run's branch. */
const ENV_DUMPING_AGENT = ["sh", "-c", 'env > agent-env.txt; echo "the work is done"'];

let gh: FakeGitHub;
let root: string;
let key: { privatePem: string; publicPem: string };
let keyFile: string;
let source: string;

beforeAll(async () => {
  root = tempDir("fake-github");
  key = rsaKey();
  keyFile = join(root, "app.pem");
  writeFileSync(keyFile, key.privatePem, { mode: 0o600 });
  gh = await startFakeGitHub({ root: join(root, "repos"), appId: APP_ID, installationId: INSTALLATION, appPublicKeyPem: key.publicPem });
  source = makeGitRepo();
  await gh.addRepo("acme", "widgets", source);
  await gh.addRepo("acme", "public", source, { public: true });
});

afterAll(async () => {
  await gh.close();
  rmSync(root, { recursive: true, force: true });
  rmSync(source, { recursive: true, force: true });
});

function appConfig(keyPath = keyFile) {
  return { githubAppId: APP_ID, githubAppKeyFile: keyPath, githubInstallationId: INSTALLATION, githubApiUrl: gh.apiUrl };
}

/** Nothing the daemon stored, logged, answered or gave a sandbox holds any token the fake minted. */
function expectNoTokenIn(d: Daemon, ...texts: string[]) {
  expect(gh.minted.length).toBeGreaterThan(0);
  const haystacks = [d.logs.join("\n"), ...texts, ...filesUnder(d.dataDir).map((f) => readFileSync(f).toString("latin1"))];
  for (const token of gh.minted) for (const h of haystacks) expect(h.includes(token)).toBe(false);
}

describe("pull requests from runs, through a GitHub App", () => {
  test("the daemon clones the private repository, pushes the run's branch and opens the PR once; no token reaches the sandbox, the log, the store or a response", async () => {
    const d = await startDaemon({ config: appConfig() });
    try {
      const { task } = await d.tasks.createTask({ title: "Add the widget", description: "Make a widget.", repository: gh.repoUrl("acme", "widgets"), origin: "test" });
      const { run } = await d.runs.startRun({ taskId: task!.id, agentCommand: ENV_DUMPING_AGENT, openPullRequest: true });
      expect(run!.openPullRequest).toBe(true);
      const seen = await watchToEnd(d, run!.id);
      const done = seen[seen.length - 1]!;
      expect(seen.map((r) => r.phase)).toContain("publishing");
      expect(done).toMatchObject({ status: RunStatus.COMPLETED, phase: "cleaned", errorMessage: "", pullRequestNumber: 1n });
      expect(done.pullRequestUrl).toBe(`${gh.url}/acme/widgets/pull/1`);

      // The branch arrived, at the run's result, pushed with an installation token.
      const bare = gh.repoPath("acme", "widgets");
      expect(await git(["rev-parse", `refs/heads/${done.resultBranch}`], { cwd: bare })).toBe(done.resultCommit);
      expect(gh.pushTokens.length).toBe(1);
      expect(gh.minted).toContain(gh.pushTokens[0]);
      // The clone went through the credential helper too (the repository is private).
      expect(gh.calls.some((c) => c.includes("/acme/widgets.git/info/refs?service=git-upload-pack user=token"))).toBe(true);

      expect(gh.pulls).toHaveLength(1);
      expect(gh.pulls[0]).toMatchObject({ head: { ref: done.resultBranch }, base: { ref: "main" }, title: "Add the widget", draft: false });
      expect(gh.pulls[0]!.body).toContain("Make a widget.");
      expect(gh.pulls[0]!.body).toContain("the work is done");
      expect(gh.pulls[0]!.body).toContain(done.id);

      // A second run of the private repository fetches into the mirror, with a token too.
      const fetchesBefore = gh.calls.filter((c) => /acme\/widgets\.git\/info\/refs\?service=git-upload-pack user=token/.test(c)).length;
      const { run: second } = await d.runs.startRun({ taskId: task!.id, agentCommand: ["true"] });
      expect((await watchToEnd(d, second!.id)).at(-1)!.status).toBe(RunStatus.COMPLETED);
      expect(gh.calls.filter((c) => /acme\/widgets\.git\/info\/refs\?service=git-upload-pack user=token/.test(c)).length).toBe(fetchesBefore + 1);
      // (git asks anonymously first, as it always does, and answers the 401 with the helper's token.)
      expect(gh.calls.some((c) => c.includes("user=refused"))).toBe(false);

      // Retry: the same PR, not a second one.
      const again = await d.runs.createPullRequest({ runId: run!.id, draft: true });
      expect(again).toMatchObject({ url: done.pullRequestUrl, number: 1n, created: false });
      expect(gh.pulls).toHaveLength(1);
      const byCli = await cliIn(d, ["run", "pr", run!.id, "--title", "ignored: it exists"]);
      expect(byCli.code, byCli.err).toBe(EXIT.ok);
      expect(byCli.out).toBe(`pull request #1 already open: ${done.pullRequestUrl}`);
      const shown = await cliIn(d, ["run", "get", run!.id]);
      expect(shown.out).toContain(`pull request: #1 ${done.pullRequestUrl}`);
      expect(gh.pulls).toHaveLength(1);

      // The sandbox's whole environment went into the branch: no token, no key.
      const agentEnv = await git(["show", `${done.resultCommit}:agent-env.txt`], { cwd: bare });
      expect(agentEnv).toContain("PADDOCK_RUN_ID");
      expect(agentEnv).not.toMatch(/ghs_|GITHUB|PRIVATE KEY/);
      // The mirror's config names the URL, with no credential in it.
      const mirrors = readdirSync(join(d.dataDir, "repos")).filter((n) => n.endsWith(".git"));
      const config = readFileSync(join(d.dataDir, "repos", mirrors[0]!, "config"), "utf8");
      expect(config).toContain(gh.repoUrl("acme", "widgets"));
      expect(config).not.toMatch(/helper|x-access-token|ghs_/);

      const log = (await allLogs(d, run!.id)).map((e) => e.text).join("\n");
      expect(log).toContain(`pull request #1 opened: ${done.pullRequestUrl}`);
      const json = (v: unknown) => JSON.stringify(v, (_, x: unknown) => (typeof x === "bigint" ? String(x) : x));
      expectNoTokenIn(d, log, json(again), json(seen), agentEnv, byCli.out, byCli.err, shown.out);
    } finally {
      await cleanUp(d);
    }
  });

  test("a restart while the PR is being opened opens it after the restart, once", async () => {
    const d = await startDaemon({ config: appConfig() });
    const { task } = await d.tasks.createTask({ title: "Restart me", repository: gh.repoUrl("acme", "widgets"), origin: "test" });
    const before = gh.pulls.length;
    gh.holdPulls();
    const { run } = await d.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", "echo restarted > r.txt"], openPullRequest: true });
    await waitForPhase(d, run!.id, "publishing");
    await gh.held();
    await d.app.stop();
    gh.release(true); // the stopped daemon's request dies with its connection
    const d2 = await d.restart();
    try {
      const seen = await watchToEnd(d2, run!.id);
      const done = seen[seen.length - 1]!;
      expect(done).toMatchObject({ status: RunStatus.COMPLETED, phase: "cleaned", pullRequestNumber: BigInt(before + 1) });
      expect(gh.pulls.filter((p) => p.head.ref === done.resultBranch)).toHaveLength(1);
      const log = (await allLogs(d2, run!.id)).map((e) => e.text).join("\n");
      expect(log).toContain("resuming the run in phase publishing");
    } finally {
      gh.release();
      await cleanUp(d2);
    }
  });

  test("CreatePullRequest on a run that is not cleaned, or not on the daemon's GitHub, says why", async () => {
    const d = await startDaemon({ config: appConfig() });
    const local = makeGitRepo();
    // Its origin is elsewhere, with credentials in the URL: never repeated in a message.
    await git(["remote", "add", "origin", "https://someone:sekrit-value@elsewhere.test/acme/widgets.git"], { cwd: local });
    try {
      const { task } = await d.tasks.createTask({ title: "local", repository: local, origin: "test" });
      const { run } = await d.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", "echo x > x.txt"] });
      await watchToEnd(d, run!.id);
      const e = await failureOf(d.runs.createPullRequest({ runId: run!.id }));
      expect(e.code).toBe(Code.FailedPrecondition);
      expect(e.rawMessage).toContain(`(https://elsewhere.test/acme/widgets.git) is not on ${gh.url}`);
      expect(e.rawMessage).not.toContain("sekrit");
      const { run: busy } = await d.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", "exec sleep 300"] });
      await waitForPhase(d, busy!.id, "running");
      const e2 = await failureOf(d.runs.createPullRequest({ runId: busy!.id }));
      expect(e2.code).toBe(Code.FailedPrecondition);
      expect(e2.rawMessage).toContain("once the run is cleaned");
      expect((await failureOf(d.runs.createPullRequest({ runId: "run_nope" }))).code).toBe(Code.NotFound);
    } finally {
      await cleanUp(d);
      rmSync(local, { recursive: true, force: true });
    }
  });
});

describe("GitHub credentials", () => {
  test("a forged App key is refused with a clear error, and so is an expired installation token", async () => {
    const forged = rsaKey();
    const bad = gitHubAppAuth({ appId: APP_ID, privateKey: forged.privatePem, installationId: INSTALLATION, apiUrl: gh.apiUrl });
    const err = await bad.token().then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/could not get an installation token for the GitHub App 4242 \(installation 77\): GitHub answered 401: A JSON web token could not be decoded \(the credential was refused/);
    const wrongInstallation = gitHubAppAuth({ appId: APP_ID, privateKey: key.privatePem, installationId: "1", apiUrl: gh.apiUrl });
    expect((await wrongInstallation.token().then(() => null, (e: Error) => e))?.message).toMatch(/GitHub answered 404/);

    const good = gitHubAppAuth({ appId: APP_ID, privateKey: key.privatePem, installationId: INSTALLATION, apiUrl: gh.apiUrl });
    const [t1, t2] = [await good.token(), await good.token()];
    expect(t1).toMatch(/^ghs_/);
    expect(t2).not.toBe(t1); // minted per operation, never cached
    const work = tempDir("clone");
    try {
      const url = gh.repoUrl("acme", "widgets");
      const c = gitCredential(url, t1);
      await git([...c.args, "clone", "--quiet", "--bare", url, join(work, "ok.git")], { env: c.env });
      gh.expireTokens();
      const c2 = gitCredential(url, t1);
      const refused = await git([...c2.args, "clone", "--quiet", "--bare", url, join(work, "expired.git")], { env: c2.env }).then(() => null, (e: Error) => e);
      expect(refused?.message).toMatch(/Authentication failed|401|could not read/i);
      expect(refused?.message).not.toContain(t1);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  test("a daemon whose App key GitHub refuses fails the clone and the PR with GitHub's words, not an internal error", async () => {
    const forgedFile = join(root, "forged.pem");
    writeFileSync(forgedFile, rsaKey().privatePem, { mode: 0o600 });
    const d = await startDaemon({ config: appConfig(forgedFile) });
    try {
      const { task } = await d.tasks.createTask({ title: "forged", repository: gh.repoUrl("acme", "widgets"), origin: "test" });
      const { run } = await d.runs.startRun({ taskId: task!.id, agentCommand: ["true"], openPullRequest: true });
      const done = (await watchToEnd(d, run!.id)).at(-1)!;
      expect(done.status).toBe(RunStatus.FAILED);
      expect(done.errorMessage).toMatch(/^provisioning failed: could not get an installation token for the GitHub App 4242 \(installation 77\): GitHub answered 401/);
      expect(done.pullRequestUrl).toBe("");
    } finally {
      await cleanUp(d);
    }
  });

  test("GitHub Enterprise URLs: the API under /api/v3, repositories at the host", () => {
    expect(gitHubWebUrl("https://api.github.com")).toBe("https://github.com");
    expect(gitHubWebUrl("https://ghe.example.test/api/v3")).toBe("https://ghe.example.test");
    expect(gitHubRepositoryOf("https://ghe.example.test", "https://ghe.example.test/acme/widgets.git")).toEqual({ owner: "acme", repo: "widgets" });
    expect(gitHubRepositoryOf("https://github.com", "https://github.com/acme/widgets")).toEqual({ owner: "acme", repo: "widgets" });
    expect(gitHubRepositoryOf("https://github.com", "https://evil.test/acme/widgets.git")).toBeNull();
    expect(gitHubRepositoryOf("https://github.com", "https://user:pw@github.com/acme/widgets.git")).toBeNull();
    expect(gitHubRepositoryOf("https://github.com", "https://github.com/acme/widgets/tree/main")).toBeNull();
  });
});

describe("git host tokens and sandboxes", () => {
  test("an environment's GITHUB_TOKEN opens the PR from the daemon and stays out of the sandbox unless the environment grants it", async () => {
    const pat = `ghp_${"x".repeat(20)}envtoken`;
    gh.addStaticToken(pat);
    const d = await startDaemon({ config: { githubApiUrl: gh.apiUrl } });
    try {
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(d.adminToken)] }));
      const secrets = [
        { name: "GITHUB_TOKEN", value: pat },
        { name: "OTHER_SECRET", value: "plain-secret-value" },
      ];
      const { environment: held } = await envs.createEnvironment({ environment: { name: "held" }, secrets });
      // Granted through the CLI, secrets from files.
      const files = tempDir("secrets");
      writeFileSync(join(files, "gh"), `${pat}\n`);
      writeFileSync(join(files, "other"), "plain-secret-value\n");
      const made = await cliIn(d, ["env", "create", "--name", "granted", "--grant-git-tokens", "--secret", `GITHUB_TOKEN=@${files}/gh`, "--secret", `OTHER_SECRET=@${files}/other`, "--json"]);
      rmSync(files, { recursive: true, force: true });
      expect(made.code, made.err).toBe(EXIT.ok);
      const granted = JSON.parse(made.out) as { id: string; grantGitTokens: boolean };
      expect(held!.grantGitTokens).toBe(false);
      expect(granted.grantGitTokens).toBe(true);
      expect((await cliIn(d, ["env", "get", granted.id])).out).toContain("git host tokens: given to its sandboxes");
      const { task } = await d.tasks.createTask({ title: "env token", repository: gh.repoUrl("acme", "public"), origin: "test" });
      const agent = ["sh", "-c", 'echo "gh=${GITHUB_TOKEN:-none} other=${OTHER_SECRET:-none}" > seen.txt'];

      const { run } = await d.runs.startRun({ taskId: task!.id, agentCommand: agent, environmentId: held!.id, openPullRequest: true });
      const done = (await watchToEnd(d, run!.id)).at(-1)!;
      expect(done).toMatchObject({ status: RunStatus.COMPLETED, errorMessage: "" });
      expect(done.pullRequestUrl).toMatch(/\/acme\/public\/pull\/\d+$/);
      expect(gh.pushTokens.at(-1)).toBe(pat);
      const bare = gh.repoPath("acme", "public");
      expect(await git(["show", `${done.resultCommit}:seen.txt`], { cwd: bare })).toBe("gh=none other=plain-secret-value");

      const { run: run2 } = await d.runs.startRun({ taskId: task!.id, agentCommand: agent, environmentId: granted.id });
      const done2 = (await watchToEnd(d, run2!.id)).at(-1)!;
      // Not pushed (no pull request asked for): the work is in the daemon's mirror.
      const mirror = sourcePath(d.dataDir, gh.repoUrl("acme", "public"));
      expect(await git(["show", `${done2.resultCommit}:seen.txt`], { cwd: mirror })).toBe(`gh=${pat} other=plain-secret-value`);
    } finally {
      await cleanUp(d);
    }
  });

  test.skipIf(!dockerAvailable())("docker: neither the App's tokens nor an environment's GITHUB_TOKEN are in the container's config or the agent's environment", async () => {
    const pat = `ghp_${"d".repeat(20)}dockertoken`;
    gh.addStaticToken(pat);
    const d = await startDaemon({ config: { ...appConfig(), defaultProvider: "docker" } });
    try {
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(d.adminToken)] }));
      const { environment } = await envs.createEnvironment({ environment: { name: "docker-held", networkAccess: NetworkAccess.FULL }, secrets: [{ name: "GITHUB_TOKEN", value: pat }] });
      const { task } = await d.tasks.createTask({ title: "docker", repository: gh.repoUrl("acme", "widgets"), origin: "test" });
      const agent = ["sh", "-c", "env > agent-env.txt; exec sleep 300"];
      const { run } = await d.runs.startRun({ taskId: task!.id, agentCommand: agent, environmentId: environment!.id, provider: "docker", openPullRequest: true });
      await waitForPhase(d, run!.id, "running", 120_000);
      // While it runs: everything docker knows about the container.
      const inspected = JSON.stringify(await new Docker().getContainer(sandboxName(run!.id)).inspect());
      expect(inspected).not.toContain(pat);
      for (const t of gh.minted) expect(inspected).not.toContain(t);
      await d.runs.completeRun({ runId: run!.id, status: RunStatus.COMPLETED });
      const done = (await watchToEnd(d, run!.id, 120_000)).at(-1)!;
      expect(done).toMatchObject({ status: RunStatus.COMPLETED, errorMessage: "" });
      expect(done.pullRequestUrl).toMatch(/\/acme\/widgets\/pull\/\d+$/);
      expect(gh.minted).toContain(gh.pushTokens.at(-1)); // the App, not the environment's token
      const agentEnv = await git(["show", `${done.resultCommit}:agent-env.txt`], { cwd: gh.repoPath("acme", "widgets") });
      expect(agentEnv).toContain("PADDOCK_RUN_ID");
      expect(agentEnv).not.toMatch(/ghs_|ghp_|GITHUB_TOKEN/);
      expectNoTokenIn(d, inspected, agentEnv);
    } finally {
      await cleanUp(d);
    }
  });

  test("without an App or a token, CreatePullRequest says how to give one", async () => {
    const d = await startDaemon({ config: { githubApiUrl: gh.apiUrl } });
    try {
      const { task } = await d.tasks.createTask({ title: "no creds", repository: gh.repoUrl("acme", "public"), origin: "test" });
      const { run } = await d.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", "echo y > y.txt"], openPullRequest: true });
      const done = (await watchToEnd(d, run!.id)).at(-1)!;
      expect(done.status).toBe(RunStatus.COMPLETED);
      expect(done.errorMessage).toMatch(/^pull request not opened: no GitHub credential for run .*--github-app-id.*GITHUB_TOKEN secret/);
      const e = await failureOf(d.runs.createPullRequest({ runId: run!.id }));
      expect(e.code).toBe(Code.FailedPrecondition);
      expect(e.rawMessage).toContain("no GitHub credential");

      // A token GitHub refuses: the push fails, saying so, without the token.
      const bogus = "ghp_bogus_token_value_123456";
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: d.url, httpVersion: "1.1", interceptors: [bearer(d.adminToken)] }));
      const { environment } = await envs.createEnvironment({ environment: { name: "bogus" }, secrets: [{ name: "GH_TOKEN", value: bogus }] });
      const { run: run2 } = await d.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", "echo z > z.txt"], environmentId: environment!.id, openPullRequest: true });
      const done2 = (await watchToEnd(d, run2!.id)).at(-1)!;
      expect(done2.errorMessage).toMatch(/^pull request not opened: could not push paddock\/run_\w+ to acme\/public with the environment's GH_TOKEN secret: git push failed: .*Authentication failed/);
      const e2 = await failureOf(d.runs.createPullRequest({ runId: run2!.id }));
      expect(e2.code).toBe(Code.FailedPrecondition);
      expect(e2.rawMessage).toContain("could not push");
      for (const text of [done2.errorMessage, e2.rawMessage, d.logs.join("\n"), (await allLogs(d, run2!.id)).map((l) => l.text).join("\n")]) expect(text).not.toContain(bogus);
    } finally {
      await cleanUp(d);
    }
  });
});
