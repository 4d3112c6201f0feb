import { createHash, timingSafeEqual } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { prepareWorkspace, type PreparedWorkspace } from "./checkout.js";
import { announceReady } from "./ready-fd.js";
import { readRunnerEnvironment, RUN_VARIABLES, RunnerEnvSchema } from "./runner-env.js";
import { CLAIM_ACCEPTED_HEADER, CLAIM_PATH, POOL_HEALTH_PATH, type ClaimRequest } from "./runner-protocol.js";

/** Where a claimed pool runner keeps the run's variables (its state volume), for its restarts. */
export const CLAIM_FILE = "claim.json";


export interface Claim {
  /** The runner's environment with the run's variables. */
  env: Record<string, string | undefined>;
  /**
   * Answers the daemon's claim: null once the run's runner listens, or why it cannot take
   * the run. Resolves when the answer is sent (a no-op after a restart: nobody is waiting).
   */
  answer(error: string | null): Promise<void>;
  /** The repository work done before the claim (none after a restart: the claim's checkout is then whole). */
  prepared: PreparedWorkspace | null;
}

interface ClaimRecord {
  hash: string;
  env: Record<string, string>;
}

/**
 * A warm pool's runner before it has a run: it serves only GET /pool and POST /claim, both
 * authenticated with the secret whose hash it was started with (PADDOCK_POOL_CLAIM) — the
 * daemon that made the container holds it, nobody else (no agent runs here yet). The first
 * valid claim is the only one: its variables are kept in the runner's state, so after a
 * restart of the container it is that run's runner, exactly as if it had started as one.
 */
export async function waitForClaim(env: Record<string, string | undefined>, log: (msg: string) => void): Promise<Claim> {
  const s = RunnerEnvSchema.pick({ PADDOCK_RUNNER_HOST: true, PADDOCK_RUNNER_PORT: true, PADDOCK_STATE_DIR: true, PADDOCK_POOL_CLAIM: true, PADDOCK_READY_FD: true }).parse(env);
  const hash = Buffer.from(s.PADDOCK_POOL_CLAIM, "hex");
  const file = join(s.PADDOCK_STATE_DIR, CLAIM_FILE);
  // Only the claim says what the run is: a snapshot's image still carries the run it was taken from.
  const run = new Set<string>(RUN_VARIABLES);
  const own = Object.fromEntries(Object.entries(env).filter(([k]) => !run.has(k)));
  if (existsSync(file)) {
    const record = JSON.parse(readFileSync(file, "utf8")) as ClaimRecord;
    // Only this container's own claim counts (the hash is per container).
    if (record.hash === s.PADDOCK_POOL_CLAIM) return { env: { ...own, ...record.env }, answer: () => Promise.resolve(), prepared: null };
  }
  // The repository is made ready for the claim now, while no run waits: the source mount is
  // the key's, the same for every run of it, and nothing of a run is in the sandbox yet.
  const place = RunnerEnvSchema.pick({ PADDOCK_WORKDIR: true, PADDOCK_AGENT_HOME: true, PADDOCK_SOURCE: true, PADDOCK_AGENT_UID: true, PADDOCK_AGENT_GID: true }).safeParse(env);
  let prepared: PreparedWorkspace | null = null;
  if (place.success && place.data.PADDOCK_SOURCE) {
    const p = place.data;
    const user = p.PADDOCK_AGENT_UID !== undefined ? { uid: p.PADDOCK_AGENT_UID, gid: p.PADDOCK_AGENT_GID ?? p.PADDOCK_AGENT_UID } : null;
    const t0 = Date.now();
    prepared = await prepareWorkspace({ source: p.PADDOCK_SOURCE, workdir: p.PADDOCK_WORKDIR, user, home: p.PADDOCK_AGENT_HOME, log });
    if (prepared) log(`workspace ready at ${prepared.head.slice(0, 12)} before the claim (${Date.now() - t0} ms)`);
  }
  const authentic = (req: IncomingMessage) => {
    const auth = req.headers.authorization ?? "";
    if (!auth.startsWith("Bearer ")) return false;
    const given = createHash("sha256").update(auth.slice(7)).digest();
    return given.length === hash.length && timingSafeEqual(given, hash);
  };
  const send = (res: ServerResponse, status: number, body: unknown) =>
    new Promise<void>((resolve) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body), () => resolve());
    });
  return new Promise<Claim>((resolve, reject) => {
    let claimed = false;
    const server = createServer((req, res) => {
      void (async () => {
        if (!authentic(req)) return send(res, 401, { error: "unauthenticated" });
        if (req.method === "GET" && req.url === POOL_HEALTH_PATH) return send(res, 200, { pooled: true });
        if (req.method !== "POST" || req.url !== CLAIM_PATH) return send(res, 404, { error: "not found (this runner waits for its claim)" });
        if (claimed) return send(res, 409, { error: "claimed already" });
        let body: ClaimRequest;
        try {
          body = await readBody(req);
        } catch (error) {
          return send(res, 400, { error: (error as Error).message });
        }
        const vars: Record<string, string> = {};
        for (const k of RUN_VARIABLES) if (typeof body.env?.[k] === "string") vars[k] = body.env[k];
        const merged = { ...own, ...vars };
        try {
          readRunnerEnvironment(merged);
        } catch (error) {
          return send(res, 400, { error: (error as Error).message });
        }
        claimed = true;
        const record: ClaimRecord = { hash: s.PADDOCK_POOL_CLAIM, env: vars };
        // A volume (docker) has it already; a modal sandbox's state directory is made here.
        mkdirSync(s.PADDOCK_STATE_DIR, { recursive: true, mode: 0o700 });
        writeFileSync(file + ".tmp", JSON.stringify(record), { mode: 0o600 });
        renameSync(file + ".tmp", file);
        // The port is the run's runner's from now on: libuv closes the listening socket at once.
        server.close();
        log(`claimed for ${vars.PADDOCK_RUN_ID}`);
        // Accepted at once (the daemon may rename the container meanwhile); the outcome is the body.
        res.writeHead(200, { "content-type": "application/json", connection: "close", [CLAIM_ACCEPTED_HEADER]: "1" });
        res.flushHeaders();
        const answer = (error: string | null) =>
          new Promise<void>((done) => {
            log(error ? `claim failed: ${error}` : "claim answered: the run's runner listens");
            res.end(JSON.stringify(error ? { error } : { ok: true }), () => done());
          });
        resolve({ env: merged, prepared, answer });
      })().catch((error: unknown) => {
        log(`claim request failed: ${String(error)}`);
        if (!res.headersSent) void send(res, 500, { error: "internal error" });
      });
    });
    server.headersTimeout = 30_000;
    server.once("error", reject);
    server.listen(s.PADDOCK_RUNNER_PORT, s.PADDOCK_RUNNER_HOST, () => {
      const port = (server.address() as AddressInfo).port;
      // A local pool's provider learns the port (0: any) and that the workspace is ready here.
      announceReady(s.PADDOCK_READY_FD, { pid: process.pid, port, agentPid: null, pooled: true });
      log(`pool runner waiting for its claim on ${s.PADDOCK_RUNNER_HOST}:${port}`);
    });
  });
}

async function readBody(req: IncomingMessage): Promise<ClaimRequest> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > 1024 * 1024) throw new Error("request body too large");
    chunks.push(c as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8")) as ClaimRequest;
  } catch {
    throw new Error("the body must be JSON");
  }
}
