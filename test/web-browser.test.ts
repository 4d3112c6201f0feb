import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join, resolve } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { cleanUp, freePort, makeGitRepo, startDaemon, tempDir, watchToEnd, type Daemon } from "./fixtures.js";

/**
 * The web UI in a real browser: Debian's Chromium driven by playwright-core, against a
 * daemon serving the built UI, with a scripted ACP agent (test/fixtures) so the run has a
 * conversation, a diff, a plan and a permission request. Screenshots go to
 * test-artifacts/web-ui/.
 */
const ROOT = resolve(import.meta.dirname, "..");
const CHROMIUM = process.env.PADDOCK_CHROMIUM || "/usr/bin/chromium";
const AGENT = `node ${resolve(import.meta.dirname, "fixtures", "scripted-acp-agent.mjs")}`;
const SHOTS = resolve(ROOT, "test-artifacts", "web-ui");
// CI installs chromium (.ci/run); elsewhere the test says why it did not run.
const available = existsSync(CHROMIUM);
if (!available && process.env.CI) throw new Error(`the browser test needs chromium at ${CHROMIUM} (apt-get install chromium)`);

/** A page on another origin (another loopback port), as a site embedding paddock would be. */
async function otherOrigin(): Promise<{ server: Server; origin: string }> {
  const server = createServer((_req, res) => res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>other site</title><p>another origin</p>"));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe.skipIf(!available)("the web UI in Chromium", () => {
  let browser: Browser;
  let daemon: Daemon;
  let repo: string;
  let allowed: { server: Server; origin: string };
  let refused: { server: Server; origin: string };

  beforeAll(async () => {
    // The UI as `npm run build` makes it: the daemon reads dist/web-ui.pack on Node.
    execFileSync(resolve(ROOT, "node_modules", ".bin", "bun"), ["scripts/build-web.ts"], { cwd: ROOT, stdio: "pipe" });
    rmSync(SHOTS, { recursive: true, force: true });
    mkdirSync(SHOTS, { recursive: true });
    allowed = await otherOrigin();
    refused = await otherOrigin();
    daemon = await startDaemon({ config: { corsOrigin: allowed.origin } });
    repo = makeGitRepo();
    // As root, Chromium's own sandbox cannot start (the pages are our own); /dev/shm may be
    // small in a container.
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
  });

  afterAll(async () => {
    await browser?.close();
    if (daemon) await cleanUp(daemon);
    for (const s of [allowed?.server, refused?.server]) s?.close();
    if (repo) rmSync(repo, { recursive: true, force: true });
  });

  const shot = (page: Page, name: string) => page.screenshot({ path: resolve(SHOTS, `${name}.png`), fullPage: true });

  async function signIn(page: Page, d: Daemon = daemon): Promise<void> {
    await page.goto(d.url);
    await page.getByLabel("API token").fill("not-a-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect.poll(() => page.getByRole("alert").textContent(), { timeout: 30_000 }).toMatch(/not signed in/);
    await page.getByLabel("API token").fill(d.adminToken);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Recent runs" }).waitFor();
  }

  test("sign in, create a task, start an ACP run, watch it live, answer its permission request, follow up, cancel", async () => {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    await signIn(page);
    // From here on, a CSP violation or a script error would show here (the wrong token above is a 401).
    const problems: string[] = [];
    page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
    page.on("pageerror", (e) => problems.push(e.message));
    expect(await page.evaluate("sessionStorage.getItem('paddock.token')")).toBe(daemon.adminToken);
    await shot(page, "1-tasks");

    // A task whose title is the agent's script: messages, a plan, and a write that asks.
    const form = page.getByTestId("new-task");
    await form.getByLabel("Title").fill("chunks plan write:asked.txt say:first_turn_done");
    await form.getByLabel("Repository").fill(repo);
    await form.getByRole("button", { name: "Create task" }).click();
    await page.getByRole("heading", { name: /^Task #1:/ }).waitFor();

    const start = page.getByTestId("start-run");
    await start.getByLabel("Agent").selectOption("acp");
    await start.getByLabel("Command", { exact: true }).fill(AGENT);
    await start.getByLabel("Provider").selectOption("local");
    await start.getByLabel("Mode").selectOption({ label: "interactive" });
    await start.getByLabel("Permission requests").selectOption({ label: "ask me" });
    await start.getByRole("button", { name: "Start run" }).click();
    await page.waitForURL(/#\/runs\/run_/);
    const runId = decodeURIComponent(page.url().split("#/runs/")[1]!);

    // Live: the conversation, the diff and the plan arrive, and the question waits for us.
    const pending = page.locator('[data-testid=permission-request][data-resolved="no"]');
    await pending.waitFor({ timeout: 30_000 });
    await expect.poll(() => page.getByTestId("conversation").textContent(), { timeout: 30_000 }).toContain("Hello from the agent.");
    await expect.poll(() => page.getByTestId("diff").textContent(), { timeout: 30_000 }).toContain("+written by the scripted agent");
    await expect.poll(() => page.getByTestId("plan").textContent(), { timeout: 30_000 }).toContain("Write the file");
    await expect.poll(() => page.getByTestId("run-status").textContent(), { timeout: 30_000 }).toMatch(/in progress · running/);
    // An ACP run's log follows once its section is opened.
    await page.getByText("Logs", { exact: true }).click();
    await expect.poll(() => page.getByTestId("logs").textContent(), { timeout: 30_000 }).toContain("Hello from the agent.");
    await shot(page, "2-permission-request");

    await pending.getByRole("button", { name: "Allow", exact: true }).click();
    await page.locator('[data-testid=permission-request][data-resolved="yes"]').waitFor();
    await expect.poll(() => page.getByTestId("permission-request").textContent(), { timeout: 30_000 }).toMatch(/Answered: Allow by admin/);
    await expect.poll(() => page.getByTestId("conversation").textContent(), { timeout: 30_000 }).toContain("first turn done");
    await expect.poll(() => page.getByTestId("tool-call").textContent(), { timeout: 30_000 }).toContain("completed");
    await expect.poll(() => page.getByTestId("run-status").textContent(), { timeout: 30_000 }).toContain("awaiting input");

    // A follow-up prompt from the box: a second turn, its lines in the log too.
    await page.getByTestId("prompt-box").getByRole("textbox").fill("say:second_turn_here");
    await page.getByTestId("prompt-box").getByRole("button", { name: /^Send/ }).click();
    await expect.poll(() => page.getByTestId("prompt").allTextContents(), { timeout: 30_000 }).toEqual([expect.stringContaining("task prompt"), expect.stringContaining("prompt from admin")]);
    await expect.poll(() => page.getByTestId("conversation").textContent(), { timeout: 30_000 }).toContain("second turn here");
    await expect.poll(() => page.getByTestId("logs").textContent(), { timeout: 30_000 }).toContain("second turn here");
    await expect.poll(() => page.getByTestId("turn-ended").count(), { timeout: 30_000 }).toBe(2);
    await shot(page, "3-follow-up");

    page.once("dialog", (d) => void d.accept());
    await page.getByTestId("cancel").click();
    await expect.poll(() => page.getByTestId("run-status").textContent(), { timeout: 30_000 }).toMatch(/^cancelled/);
    const final = (await watchToEnd(daemon, runId)).pop()!;
    expect(final.status).toBe(RunStatus.CANCELLED);
    await shot(page, "4-cancelled");

    // The task list: the run is listed, and the search narrows the tasks.
    await page.goto(`${daemon.url}/#/`);
    await page.getByTestId("run-row").first().waitFor();
    await page.getByRole("searchbox").fill("no task has this title");
    await expect.poll(() => page.getByTestId("task-row").count(), { timeout: 30_000 }).toBe(0);
    await page.getByRole("searchbox").fill("asked.txt");
    await expect.poll(() => page.getByTestId("task-row").count(), { timeout: 30_000 }).toBe(1);
    expect(problems).toEqual([]);
    await page.close();
  });

  test("environments keep secrets write-only; a new token's secret is shown once", async () => {
    const page = await browser.newPage();
    await signIn(page);
    await page.getByRole("link", { name: "Environments" }).click();
    await page.getByRole("button", { name: "New environment" }).click();
    const form = page.getByTestId("environment-form");
    await form.getByLabel("Name", { exact: true }).fill("web-env");
    await form.getByLabel("Secret name").fill("API_KEY");
    await form.getByLabel("Secret value").fill("s3cr3t-value-never-shown");
    await form.getByRole("button", { name: "Create" }).click();
    await expect.poll(() => page.getByTestId("environment-row").textContent(), { timeout: 30_000 }).toContain("API_KEY");
    await page.getByTestId("environment-row").getByRole("button", { name: "Edit" }).click();
    await page.getByTestId("secret").waitFor();
    expect(await page.content()).not.toContain("s3cr3t-value-never-shown");
    await shot(page, "5-environment");
    // Edit: a custom network policy, and the secret removed; the other fields keep their values.
    await form.getByLabel("Network access").selectOption({ label: "custom (the domains below)" });
    await form.getByLabel("Allowed domains").fill("api.example.test");
    await form.getByTestId("secret").getByRole("checkbox").check();
    await form.getByRole("button", { name: "Save" }).click();
    await expect.poll(() => page.getByTestId("environment-row").textContent(), { timeout: 30_000 }).toMatch(/web-env.*custom \(api\.example\.test\)none/);

    await page.getByRole("link", { name: "Tokens" }).click();
    const create = page.getByTestId("new-token");
    await create.getByLabel("Team").fill("default");
    await create.getByLabel("Name", { exact: true }).fill("from-the-web");
    await create.getByLabel("runs:read").check();
    await create.getByRole("button", { name: "Create token" }).click();
    const secret = (await page.getByTestId("new-secret").locator("code").textContent())!;
    expect(secret.length).toBeGreaterThan(20);
    await expect.poll(() => page.getByTestId("token-row").allTextContents()).toContainEqual(expect.stringContaining("from-the-web"));
    await shot(page, "6-tokens");
    await page.close();

    // That token may read runs only: it signs in, and the task list says what it may not see.
    const limited = await browser.newPage();
    await limited.goto(daemon.url);
    await limited.getByLabel("API token").fill(secret);
    await limited.getByRole("button", { name: "Sign in" }).click();
    await expect.poll(() => limited.getByRole("alert").allTextContents()).toContainEqual(expect.stringMatching(/^PermissionDenied/));
    await limited.close();
  });

  test("a command run's page shows its log (open at once) and how it ended", async () => {
    const { task } = await daemon.tasks.createTask({ title: "command run", repository: repo });
    const { run } = await daemon.runs.startRun({ taskId: task!.id, provider: "local", agentCommand: ["sh", "-c", "echo first-line; echo second-line; exit 3"] });
    const page = await browser.newPage();
    await signIn(page);
    await page.goto(`${daemon.url}/#/runs/${run!.id}`);
    await expect.poll(() => page.getByTestId("logs").textContent(), { timeout: 30_000 }).toMatch(/first-line[\s\S]*second-line/);
    await expect.poll(() => page.getByTestId("run-status").textContent(), { timeout: 30_000 }).toMatch(/^failed/);
    await expect.poll(() => page.getByTestId("run-summary").textContent(), { timeout: 30_000 }).toContain("Exit code3");
    expect(await page.getByTestId("conversation").count()).toBe(0);
    await shot(page, "7-command-run");
    await page.close();
  });

  test("a run page rides out a daemon restart: its streams reconnect and every line shows once", async () => {
    const port = await freePort();
    const flagDir = tempDir("web-flag");
    chmodSync(flagDir, 0o755); // the agent may run under a uid of its own
    const flag = join(flagDir, "go");
    let d = await startDaemon({ config: { listen: `127.0.0.1:${port}` } });
    try {
      const { task } = await d.tasks.createTask({ title: "across a restart", repository: repo });
      const script = `echo before-restart; while [ ! -f ${flag} ]; do sleep 0.1; done; echo after-restart`;
      const { run } = await d.runs.startRun({ taskId: task!.id, provider: "local", agentCommand: ["sh", "-c", script] });
      const page = await browser.newPage();
      await signIn(page, d);
      await page.goto(`${d.url}/#/runs/${run!.id}`);
      await expect.poll(() => page.getByTestId("logs").textContent(), { timeout: 30_000 }).toContain("before-restart");
      await d.app.stop(); // the runner carries on without the daemon
      await expect.poll(() => page.getByRole("alert").allTextContents(), { timeout: 30_000 }).toContainEqual(expect.stringMatching(/reconnecting…/));
      d = await d.restart();
      writeFileSync(flag, "");
      await expect.poll(() => page.getByTestId("run-status").textContent(), { timeout: 60_000 }).toMatch(/^completed/);
      await expect.poll(() => page.locator(".log-stdout").allTextContents(), { timeout: 30_000 }).toEqual(["stdoutbefore-restart", "stdoutafter-restart"]);
      await expect.poll(() => page.getByTestId("logs").textContent(), { timeout: 30_000 }).toContain("daemon restarted");
      // Back: the reconnecting note is gone.
      await expect.poll(() => page.getByRole("alert").count(), { timeout: 30_000 }).toBe(0);
      await shot(page, "8-after-restart");
      await page.close();
    } finally {
      await cleanUp(d);
      rmSync(flagDir, { recursive: true, force: true });
    }
  });

  test("a page on another origin reaches the API only when --cors-origin allows its origin", async () => {
    const call = (page: Page) =>
      page.evaluate(
        async ({ url, token }) => {
          try {
            const res = await fetch(`${url}/paddock.v1.TaskService/ListTasks`, {
              method: "POST",
              headers: { "content-type": "application/json", "connect-protocol-version": "1", authorization: `Bearer ${token}` },
              body: "{}",
            });
            return { status: res.status, body: await res.text() };
          } catch (error) {
            return { error: String(error) };
          }
        },
        { url: daemon.url, token: daemon.adminToken },
      );
    const page = await browser.newPage();
    await page.goto(allowed.origin);
    const ok = await call(page);
    expect(ok).toMatchObject({ status: 200 });
    expect(JSON.parse((ok as { body: string }).body).tasks.length).toBeGreaterThan(0);
    await page.goto(refused.origin);
    expect(await call(page)).toEqual({ error: expect.stringMatching(/Failed to fetch/) });
    await page.close();
  });

  test("the task search reaches past the first page of tasks", async () => {
    await daemon.tasks.createTask({ title: "the oldest needle", repository: repo });
    for (let i = 0; i < 205; i++) await daemon.tasks.createTask({ title: `hay ${i}`, repository: repo });
    const page = await browser.newPage();
    await signIn(page);
    await expect.poll(() => page.getByTestId("task-row").count(), { timeout: 30_000 }).toBe(200);
    await page.getByRole("searchbox").fill("oldest needle");
    await expect.poll(() => page.getByTestId("task-row").allTextContents(), { timeout: 30_000 }).toEqual([expect.stringContaining("the oldest needle")]);
    await page.close();
  });
});
