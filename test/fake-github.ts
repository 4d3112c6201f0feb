import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { join } from "node:path";
import { importSPKI, jwtVerify } from "jose";

/**
 * A GitHub (Enterprise-shaped: the API under /api/v3) on 127.0.0.1, for tests. It does
 * what paddock relies on, the way GitHub does it:
 * - POST /api/v3/app/installations/{id}/access_tokens verifies the App's JWT (RS256, its
 *   iss, exp) with jose and mints an installation token `ghs_…` that expires;
 * - GET /api/v3/repos/{o}/{r}, and GET/POST /api/v3/repos/{o}/{r}/pulls (list by head,
 *   create; 422 for a duplicate or a head that is not in the repository);
 * - git smart HTTP through the real `git http-backend` (a CGI, spawned per request) over
 *   bare repositories under `root`, behind basic auth `x-access-token:<token>` (every
 *   repository is private unless made public).
 */
export interface FakePull {
  number: number;
  repo: string;
  state: "open" | "closed";
  draft: boolean;
  title: string;
  body: string;
  head: { ref: string };
  base: { ref: string };
  html_url: string;
}

export interface FakeGitHubOptions {
  root: string;
  appId: string;
  installationId: string;
  appPublicKeyPem: string;
}

export interface FakeGitHub {
  /** http://127.0.0.1:PORT, where repositories are (the "web" URL). */
  url: string;
  apiUrl: string;
  repoUrl(owner: string, repo: string): string;
  /** Where the bare repository owner/repo lives (created with addRepo). */
  repoPath(owner: string, repo: string): string;
  /** A bare repository holding `from`'s branches; private unless public. */
  addRepo(owner: string, repo: string, from: string, opts?: { public?: boolean }): Promise<void>;
  /** A token that works like a personal access token (never expires). */
  addStaticToken(token: string): void;
  /** Every installation token minted so far. */
  minted: string[];
  pulls: FakePull[];
  /** One line per request: "METHOD path user=<token kind or anonymous>". */
  calls: string[];
  /** Tokens used for git pushes (receive-pack), in order. */
  pushTokens: string[];
  /** Every token minted so far expires now. */
  expireTokens(): void;
  /** Pull endpoints stop answering until release(); release(true) drops the held connections instead. */
  holdPulls(): void;
  release(drop?: boolean): void;
  /** Resolves once a request to the pulls endpoints is being held. */
  held(): Promise<void>;
  close(): Promise<void>;
}

export async function startFakeGitHub(o: FakeGitHubOptions): Promise<FakeGitHub> {
  const key = await importSPKI(o.appPublicKeyPem, "RS256");
  const tokens = new Map<string, number>(); // token → expiry (epoch ms)
  const publicRepos = new Set<string>();
  const pulls: FakePull[] = [];
  const calls: string[] = [];
  const minted: string[] = [];
  const pushTokens: string[] = [];
  const sockets = new Set<Socket>();
  let holding = false;
  let waiters: { res: ServerResponse; go: () => void }[] = [];
  let heldSignal: (() => void) | null = null;
  let url = "";

  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };
  const valid = (token: string) => (tokens.get(token) ?? 0) > Date.now();
  const apiToken = (req: IncomingMessage) => (req.headers.authorization ?? "").replace(/^(token|bearer) /i, "");
  const readBody = (req: IncomingMessage) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => resolve(chunks.length ? (JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>) : {}));
      req.on("error", reject);
    });
  const hold = (res: ServerResponse) =>
    new Promise<void>((go) => {
      waiters.push({ res, go });
      heldSignal?.();
    });

  const server = createServer((req, res) => {
    void handle(req, res).catch((error: unknown) => json(res, 500, { message: String(error) }));
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? "/", "http://fake");
    let m: RegExpExecArray | null;
    if (req.method === "POST" && (m = /^\/api\/v3\/app\/installations\/([^/]+)\/access_tokens$/.exec(u.pathname))) {
      calls.push(`POST ${u.pathname} user=app-jwt`);
      try {
        const { payload } = await jwtVerify(apiToken(req), key, { algorithms: ["RS256"] });
        if (String(payload.iss) !== o.appId) throw new Error("iss");
      } catch {
        return json(res, 401, { message: "A JSON web token could not be decoded", documentation_url: "https://docs.github.com/rest" });
      }
      if (m[1] !== o.installationId) return json(res, 404, { message: "Not Found" });
      const token = `ghs_${randomBytes(18).toString("base64url")}`;
      const expires = Date.now() + 3600_000;
      tokens.set(token, expires);
      minted.push(token);
      return json(res, 201, { token, expires_at: new Date(expires).toISOString(), permissions: { contents: "write", pull_requests: "write" }, repository_selection: "all" });
    }
    if ((m = /^\/api\/v3\/repos\/([^/]+)\/([^/]+)(\/pulls)?$/.exec(u.pathname))) {
      const [, owner, repo, isPulls] = m as unknown as [string, string, string, string | undefined];
      const token = apiToken(req);
      calls.push(`${req.method} ${u.pathname}${u.search} user=${valid(token) ? "token" : "anonymous"}`);
      if (!valid(token)) return json(res, 401, { message: "Bad credentials", documentation_url: "https://docs.github.com/rest" });
      if (!isPulls) return json(res, 200, { full_name: `${owner}/${repo}`, default_branch: "main", private: !publicRepos.has(`${owner}/${repo}`) });
      if (holding) await hold(res);
      if (req.method === "GET") {
        const head = u.searchParams.get("head");
        const state = u.searchParams.get("state") ?? "open";
        return json(res, 200, pulls.filter((p) => p.repo === `${owner}/${repo}` && (!head || `${owner}:${p.head.ref}` === head) && (state === "all" || p.state === state)));
      }
      if (req.method !== "POST") return json(res, 404, { message: "Not Found" });
      const b = await readBody(req);
      const head = String(b.head ?? "");
      const exists = await run(["--git-dir", join(o.root, owner, `${repo}.git`), "rev-parse", "--verify", "--quiet", `refs/heads/${head}`]);
      if (!exists) return json(res, 422, { message: "Validation Failed", errors: [{ resource: "PullRequest", field: "head", code: "invalid" }] });
      if (pulls.some((p) => p.repo === `${owner}/${repo}` && p.head.ref === head && p.state === "open")) {
        return json(res, 422, { message: "Validation Failed", errors: [{ resource: "PullRequest", code: "custom", message: `A pull request already exists for ${owner}:${head}.` }] });
      }
      const number = pulls.length + 1;
      const pr: FakePull = {
        number,
        repo: `${owner}/${repo}`,
        state: "open",
        draft: !!b.draft,
        title: String(b.title ?? ""),
        body: String(b.body ?? ""),
        head: { ref: head },
        base: { ref: String(b.base ?? "") },
        html_url: `${url}/${owner}/${repo}/pull/${number}`,
      };
      pulls.push(pr);
      return json(res, 201, pr);
    }
    if ((m = /^\/([^/]+)\/([^/]+\.git)(\/.*)$/.exec(u.pathname))) return git(req, res, u, m[1]!, m[2]!, m[3]!);
    calls.push(`${req.method} ${u.pathname} user=?`);
    json(res, 404, { message: "Not Found" });
  }

  /** Git smart HTTP: the real git http-backend as a CGI, with GitHub's basic auth in front. */
  function git(req: IncomingMessage, res: ServerResponse, u: URL, owner: string, repoGit: string, rest: string): void {
    const [user, pass] = Buffer.from((req.headers.authorization ?? "").replace(/^Basic /i, ""), "base64").toString().split(":");
    const authed = user === "x-access-token" && !!pass && valid(pass);
    const pushing = rest === "/git-receive-pack" || u.searchParams.get("service") === "git-receive-pack";
    calls.push(`${req.method} ${u.pathname}${u.search} user=${authed ? "token" : req.headers.authorization ? "refused" : "anonymous"}`);
    const isPublic = publicRepos.has(`${owner}/${repoGit.replace(/\.git$/, "")}`);
    if (!authed && (pushing || !isPublic)) {
      res.writeHead(401, { "www-authenticate": 'Basic realm="GitHub"' });
      res.end();
      return;
    }
    if (pushing && rest === "/git-receive-pack") pushTokens.push(pass!);
    const cgi = spawn("git", ["http-backend"], {
      env: {
        PATH: process.env.PATH,
        GIT_PROJECT_ROOT: o.root,
        GIT_HTTP_EXPORT_ALL: "1",
        ...(authed ? { REMOTE_USER: "x-access-token" } : {}),
        REMOTE_ADDR: req.socket.remoteAddress ?? "127.0.0.1",
        REQUEST_METHOD: req.method ?? "GET",
        PATH_INFO: `/${owner}/${repoGit}${rest}`,
        QUERY_STRING: u.search.slice(1),
        CONTENT_TYPE: req.headers["content-type"] ?? "",
        ...(req.headers["content-length"] ? { CONTENT_LENGTH: req.headers["content-length"] } : {}),
        ...(req.headers["content-encoding"] ? { HTTP_CONTENT_ENCODING: req.headers["content-encoding"] } : {}),
        ...(req.headers["git-protocol"] ? { GIT_PROTOCOL: String(req.headers["git-protocol"]) } : {}),
      },
    });
    req.pipe(cgi.stdin);
    let buf = Buffer.alloc(0);
    let started = false;
    cgi.stdout.on("data", (d: Buffer) => {
      if (started) return void res.write(d);
      buf = Buffer.concat([buf, d]);
      const crlf = buf.indexOf("\r\n\r\n");
      const lf = buf.indexOf("\n\n");
      const end = crlf >= 0 ? crlf : lf;
      if (end < 0) return;
      const headers: Record<string, string> = {};
      let status = 200;
      for (const line of buf.subarray(0, end).toString().split(/\r?\n/)) {
        const i = line.indexOf(":");
        const name = line.slice(0, i).trim();
        const value = line.slice(i + 1).trim();
        if (name.toLowerCase() === "status") status = parseInt(value, 10);
        else if (name) headers[name] = value;
      }
      res.writeHead(status, headers);
      started = true;
      res.write(buf.subarray(end + (crlf >= 0 ? 4 : 2)));
    });
    cgi.stdout.on("end", () => res.end());
    cgi.on("error", (error) => json(res, 500, { message: String(error) }));
  }

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const repoPath = (owner: string, repo: string) => join(o.root, owner, `${repo}.git`);
  return {
    url,
    apiUrl: `${url}/api/v3`,
    repoUrl: (owner, repo) => `${url}/${owner}/${repo}.git`,
    repoPath,
    async addRepo(owner, repo, from, opts = {}) {
      mkdirSync(join(o.root, owner), { recursive: true });
      await run(["clone", "--quiet", "--bare", from, repoPath(owner, repo)]);
      await run(["--git-dir", repoPath(owner, repo), "config", "http.receivepack", "true"]);
      if (opts.public) publicRepos.add(`${owner}/${repo}`);
    },
    addStaticToken: (token) => void tokens.set(token, Number.MAX_SAFE_INTEGER),
    minted,
    pulls,
    calls,
    pushTokens,
    expireTokens() {
      for (const t of minted) tokens.set(t, 0);
    },
    holdPulls() {
      holding = true;
    },
    release(drop = false) {
      holding = false;
      const w = waiters;
      waiters = [];
      for (const { res, go } of w) {
        if (drop) res.socket?.destroy();
        else go();
      }
    },
    held: () =>
      new Promise<void>((resolve) => {
        if (waiters.length > 0) return resolve();
        heldSignal = () => {
          heldSignal = null;
          resolve();
        };
      }),
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** git, asynchronously (the fake runs in the test's process: a synchronous git would deadlock it). Resolves to stdout, "" on failure. */
function run(args: string[]): Promise<string> {
  return new Promise((resolve) => {
    const p = spawn("git", args, { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    p.on("close", (code) => resolve(code === 0 ? out.trim() : ""));
    p.on("error", () => resolve(""));
  });
}
