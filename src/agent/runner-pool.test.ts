import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { CLAIM_FILE, waitForClaim } from "./runner-pool.js";
import { CLAIM_ACCEPTED_HEADER, claimSecretHash } from "./runner-protocol.js";

const KEY = "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n";
const RUN = { PADDOCK_RUN_ID: "run_abc1", PADDOCK_RESULT_BRANCH: "paddock/run_abc1", PADDOCK_AGENT_COMMAND: '["true"]', JWT_PUBLIC_KEY: KEY };

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

async function poolRunner(secret: string, extra: Record<string, string> = {}) {
  const state = mkdtempSync(join(tmpdir(), "paddock-pool-runner-"));
  dirs.push(state);
  const port = await freePort();
  const env = { PADDOCK_RUNNER_HOST: "127.0.0.1", PADDOCK_RUNNER_PORT: String(port), PADDOCK_STATE_DIR: state, PADDOCK_WORKDIR: "/w", PADDOCK_AGENT_HOME: "/h", PADDOCK_POOL_CLAIM: claimSecretHash(secret), ...extra };
  const claim = waitForClaim(env, () => {});
  const url = `http://127.0.0.1:${port}`;
  // Up once it answers (the listen is under way when waitForClaim returns its promise).
  for (let i = 0; i < 200; i++) if (await fetch(url + "/pool").then(() => true, () => false)) break;
  return { state, url, env, claim };
}

describe("a warm pool's runner before its claim", () => {
  it("answers only the daemon's secret, takes one claim, and keeps it for its restarts", async () => {
    const r = await poolRunner("s3cret", { PADDOCK_RUN_ID: "run_stale", PADDOCK_PROMPT: "an earlier run's" });
    const call = (path: string, secret: string, body?: unknown) =>
      fetch(r.url + path, { method: body ? "POST" : "GET", headers: { authorization: `Bearer ${secret}` }, body: body ? JSON.stringify(body) : undefined });
    expect((await call("/pool", "wrong")).status).toBe(401);
    expect((await call("/claim", "wrong", { env: RUN })).status).toBe(401);
    expect((await call("/health", "s3cret")).status).toBe(404);
    expect((await call("/pool", "s3cret")).status).toBe(200);
    // A claim the runner could not run with is refused and leaves it waiting.
    expect((await call("/claim", "s3cret", { env: { ...RUN, PADDOCK_RUN_ID: "nope" } })).status).toBe(400);
    const answered = call("/claim", "s3cret", { env: { ...RUN, PADDOCK_SOURCE: "/elsewhere" } });
    const claim = await r.claim;
    // The run's variables, and nothing else from the claim; the image's stale run is gone.
    expect(claim.env).toMatchObject({ ...RUN, PADDOCK_STATE_DIR: r.state });
    expect(claim.env.PADDOCK_SOURCE).toBeUndefined();
    expect(claim.env.PADDOCK_PROMPT).toBeUndefined();
    await claim.answer(null);
    expect((await answered).status).toBe(200);
    expect(statSync(join(r.state, CLAIM_FILE)).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(r.state, CLAIM_FILE), "utf8")).not.toContain("s3cret");
    // A restart of the container: the same run, no claim needed.
    const again = await waitForClaim(r.env, () => {});
    expect(again.env).toMatchObject(RUN);
  });

  it("answers the claim's headers once it is recorded, and the outcome when the run's runner is up or cannot be", async () => {
    for (const outcome of [null, "checkout failed: no such branch"]) {
      const r = await poolRunner("s3cret");
      const res = await fetch(r.url + "/claim", { method: "POST", headers: { authorization: "Bearer s3cret" }, body: JSON.stringify({ env: RUN }) });
      // The answer's head came before the claim was answered: the daemon may rename the container now.
      expect(res.status).toBe(200);
      expect(res.headers.get(CLAIM_ACCEPTED_HEADER)).toBe("1");
      expect(readFileSync(join(r.state, CLAIM_FILE), "utf8")).toContain(RUN.PADDOCK_RUN_ID);
      const claim = await r.claim;
      await claim.answer(outcome);
      expect(await res.json()).toEqual(outcome ? { error: outcome } : { ok: true });
    }
  });

  it("ignores a claim file that is not its own (a snapshot's image carried it)", async () => {
    const first = await poolRunner("one");
    const claimed = fetch(first.url + "/claim", { method: "POST", headers: { authorization: "Bearer one" }, body: JSON.stringify({ env: RUN }) });
    await (await first.claim).answer(null);
    await claimed;
    // Another member's hash, the same state: it waits for its own claim.
    const port = await freePort();
    const waiting = waitForClaim({ ...first.env, PADDOCK_RUNNER_PORT: String(port), PADDOCK_POOL_CLAIM: claimSecretHash("two") }, () => {});
    let up = false;
    for (let i = 0; i < 200 && !up; i++) up = await fetch(`http://127.0.0.1:${port}/pool`, { headers: { authorization: "Bearer two" } }).then((res) => res.status === 200, () => false);
    expect(up).toBe(true);
    const next = fetch(`http://127.0.0.1:${port}/claim`, { method: "POST", headers: { authorization: "Bearer two" }, body: JSON.stringify({ env: { ...RUN, PADDOCK_RUN_ID: "run_abc2" } }) });
    const claim = await waiting;
    expect(claim.env.PADDOCK_RUN_ID).toBe("run_abc2");
    await claim.answer(null);
    await next;
  });
});
