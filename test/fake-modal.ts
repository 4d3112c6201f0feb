// A local fake of Modal's control plane and task command router for the modal provider's
// tests. It serves the SDK's own service definitions, taken at test time from the installed
// node_modules/modal/dist (nothing of Modal's is kept in this repository), with nice-grpc
// over plaintext on 127.0.0.1. A "sandbox" is a process group in a temp dir running the
// command it was given (the paddock binary is put on its PATH); an encrypted port is a TLS
// proxy on loopback with a certificate of a CA the fake makes. Only the RPCs the provider
// uses are implemented; any other answers UNIMPLEMENTED and is recorded for the test to see.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer as createNetServer, connect, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { createServer as createTlsServer, type Server as TlsServer } from "node:tls";
import { createServer, ServerError, Status, type CallContext, type Server } from "nice-grpc";

// The SDK's messages, untyped here: the definitions are loaded at run time from its bundle.
type Req = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type MethodDef = { name: string; responseStream: boolean };
type ServiceDef = { name: string; fullName: string; methods: Record<string, MethodDef> };

/** The SDK's generated definitions, re-exported from a copy of its bundle beside node_modules. */
async function loadDefinitions(): Promise<{ cp: ServiceDef; router: ServiceDef }> {
  const root = resolve(import.meta.dirname, "..");
  const dist = join(root, "node_modules", "modal", "dist", "index.js");
  const dir = join(root, "node_modules", ".cache", "fake-modal");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `defs-${process.pid}.mjs`);
  writeFileSync(file, readFileSync(dist, "utf8") + "\nexport { ModalClientDefinition as __cp, TaskCommandRouterDefinition as __router };\n");
  const mod = (await import(pathToFileURL(file).href)) as { __cp: ServiceDef; __router: ServiceDef };
  rmSync(file, { force: true });
  return { cp: mod.__cp, router: mod.__router };
}

interface Proc {
  child: ChildProcess;
  out: Buffer[];
  exit: { code?: number; signal?: number } | null;
  waiters: (() => void)[];
}

export interface FakeSandbox {
  id: string;
  taskId: string;
  appId: string;
  name: string;
  dir: string;
  tags: Record<string, string>;
  definition: Req;
  createdAt: number;
  main: Proc;
  tunnels: { containerPort: number; host: string; port: number; server: TlsServer; localPort: number }[];
  terminated: boolean;
  /** The sandbox's files at its exit (a tar), when it asked for exit snapshots. */
  exitImage?: string;
  network: Req | undefined;
  /** Maps a path or value of the sandbox's world onto this host (its dir, its ports). */
  rewrite: (v: string) => string;
  env: Record<string, string>;
  execs: Map<string, Proc>;
}

export interface FakeModal {
  url: string;
  caFile: string;
  sandboxes: Map<string, FakeSandbox>;
  images: Map<string, { tar?: string; dockerfile?: string[] }>;
  /** Every implemented RPC called, in order ("SandboxCreateV2"…). */
  calls: string[];
  /** RPCs the fake does not implement that someone called: must stay empty. */
  unimplemented: string[];
  /** Makes the next `times` calls of `method` fail with `code`. */
  failNext(method: string, code: Status, message: string, times?: number): void;
  /** Makes `method` hang (until resumed) — a control plane that does not answer. */
  hang(method: string, on: boolean): void;
  /** Makes `method` do its work and then hang before answering — the caller never hears it happened. */
  hangAfter(method: string, on: boolean): void;
  /** Sandboxes whose process still runs. */
  running(): FakeSandbox[];
  /** Kills a sandbox's processes from outside, as a node failure would. */
  kill(name: string): void;
  /** A sandbox made by someone else (another daemon), sleeping. */
  foreign(appName: string, name: string, tags: Record<string, string>): Promise<FakeSandbox>;
  close(): Promise<void>;
}

const b62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const rid = (prefix: string, n = 22) => prefix + Array.from({ length: n }, () => b62[Math.floor(Math.random() * 62)]).join("");
const jwt = () =>
  [{ alg: "none" }, { exp: Math.floor(Date.now() / 1000) + 3600 }].map((x) => Buffer.from(JSON.stringify(x)).toString("base64url")).join(".") + ".sig";

/** Paths the sandbox image has at its root: in the fake they live under the sandbox's dir. */
const ROOTED = ["/workspace", "/paddock", "/home/agent"];

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createNetServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => res(port));
    });
    s.on("error", rej);
  });
}

/** A CA and a certificate for 127.0.0.1 signed by it, made with openssl for this fake only. */
function makeTls(dir: string): { caFile: string; key: Buffer; cert: Buffer } {
  const o = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
  o(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=fake-modal test CA", "-keyout", "ca.key", "-out", "ca.pem"]);
  o(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "tunnel.key", "-out", "tunnel.csr"]);
  writeFileSync(join(dir, "ext"), "subjectAltName=IP:127.0.0.1\n");
  o(["x509", "-req", "-in", "tunnel.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", "ext", "-out", "tunnel.pem"]);
  return { caFile: join(dir, "ca.pem"), key: readFileSync(join(dir, "tunnel.key")), cert: readFileSync(join(dir, "tunnel.pem")) };
}

export async function startFakeModal(opts: { paddockBinary: string }): Promise<FakeModal> {
  const defs = await loadDefinitions();
  const work = mkdtempSync(join(tmpdir(), "fake-modal-"));
  chmodSync(work, 0o755);
  // The agent's user of this fake's sandboxes. In Modal each sandbox is a machine of its own;
  // here every sandbox shares this host's uids, and a runner ends its agent by killing every
  // process of the agent's uid (kill -9 -1 as that uid). With the image's uid (1000) for all,
  // a runner of another fake (another test file, run at the same time) killed this one's
  // git in the middle of an export. One uid per fake, outside the local provider's
  // 600000-699999 range: its snapshots and rescues keep their files' owner, as in Modal.
  const agentUid = String(1_000_000 + Math.floor(Math.random() * 1_000_000_000));
  const tls = makeTls(work);
  // `paddock` on the sandboxes' PATH: this worktree's binary (never process.execPath, which
  // in a compiled binary would be paddock itself, and under vitest is node).
  const bin = join(work, "bin");
  mkdirSync(bin);
  symlinkSync(resolve(opts.paddockBinary), join(bin, "paddock"));

  const calls: string[] = [];
  const unimplemented: string[] = [];
  const failures = new Map<string, { code: Status; message: string; times: number }>();
  const hanging = new Set<string>();
  const hangingAfter = new Set<string>();
  const apps = new Map<string, string>();
  const images = new Map<string, { tar?: string; dockerfile?: string[] }>();
  const sandboxes = new Map<string, FakeSandbox>();
  const byTask = new Map<string, FakeSandbox>();
  let routerPort = 0;

  const changed = (p: Proc) => new Promise<void>((r) => p.waiters.push(r));
  const wake = (p: Proc) => {
    const w = p.waiters;
    p.waiters = [];
    w.forEach((f) => f());
  };
  const must = (id: string) => {
    const sb = sandboxes.get(id);
    if (!sb) throw new ServerError(Status.NOT_FOUND, `Sandbox ${id} not found`);
    return sb;
  };
  const mustTask = (id: string) => {
    const sb = byTask.get(id);
    if (!sb) throw new ServerError(Status.NOT_FOUND, `Task ${id} not found`);
    return sb;
  };
  const killGroup = (sb: FakeSandbox, signal: NodeJS.Signals) => {
    try {
      process.kill(-sb.main.child.pid!, signal);
    } catch {
      /* gone */
    }
  };
  const result = (sb: FakeSandbox) => {
    const e = sb.main.exit!;
    return sb.terminated ? { status: 3, exitcode: e.code ?? 137 } : { status: e.code === 0 ? 1 : 2, exitcode: e.code ?? 128 + (e.signal ?? 9) };
  };

  async function startSandbox(appId: string, appName: string, d: Req, tags: Record<string, string>, env: Record<string, string>): Promise<FakeSandbox> {
    const dir = mkdtempSync(join(work, "sb-"));
    chmodSync(dir, 0o755);
    const image = images.get(d.imageId);
    if (!image) throw new ServerError(Status.NOT_FOUND, `Image ${d.imageId} not found`);
    if (image.tar) execFileSync("tar", ["-xf", image.tar, "-C", dir]);
    // What every image has: /home and /paddock, traversable by all.
    for (const d of ["home", "paddock", "root"]) mkdirSync(join(dir, d), { recursive: true, mode: 0o755 });
    // The sandbox's own network namespace, emulated: each open port gets a free loopback port.
    const ports = new Map<number, number>();
    for (const p of (d.openPorts?.ports ?? []) as { port: number }[]) ports.set(p.port, await freePort());
    const rewrite = (v: string) => {
      if (ROOTED.some((r) => v === r || v.startsWith(r + "/"))) return dir + v;
      const n = Number(v);
      if (ports.has(n)) return String(ports.get(n));
      return v === "0.0.0.0" ? "127.0.0.1" : v;
    };
    const childEnv: Record<string, string> = { PATH: `${bin}:/usr/local/bin:/usr/bin:/bin`, HOME: dir + "/root" };
    for (const [k, v] of Object.entries(env)) childEnv[k] = k === "PADDOCK_AGENT_UID" || k === "PADDOCK_AGENT_GID" ? agentUid : rewrite(v);
    const argv: string[] = (d.entrypointArgs?.length ? (d.entrypointArgs as string[]) : ["sleep", String(d.timeoutSecs || 300)]).map(rewrite);
    const child = spawn(argv[0]!, argv.slice(1), { cwd: d.workdir ? rewrite(d.workdir) : dir, env: childEnv, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    const main: Proc = { child, out: [Buffer.alloc(0), Buffer.alloc(0)], exit: null, waiters: [] };
    const sb: FakeSandbox = {
      id: rid("sb-v2-"),
      taskId: rid("ta-"),
      appId,
      name: d.name || "",
      dir,
      tags,
      definition: d,
      createdAt: Date.now() / 1000,
      main,
      tunnels: [],
      terminated: false,
      network: d.networkAccess,
      rewrite,
      env: childEnv,
      execs: new Map(),
    };
    void appName;
    child.stdout!.on("data", (c: Buffer) => ((main.out[0] = Buffer.concat([main.out[0]!, c])), wake(main)));
    child.stderr!.on("data", (c: Buffer) => ((main.out[1] = Buffer.concat([main.out[1]!, c])), wake(main)));
    child.on("error", () => ((main.exit = { code: 127 }), wake(main)));
    child.on("exit", (code, signal) => {
      killGroup(sb, "SIGKILL"); // the sandbox ends with its main process
      for (const p of sb.execs.values()) {
        try {
          process.kill(-p.child.pid!, "SIGKILL");
        } catch {
          /* gone */
        }
      }
      if (d.experimentalOptions?.enable_exit_snapshot === "true" || d.experimentalOptionsV2?.enable_exit_snapshot) {
        const tar = join(work, `${sb.id}-exit.tar`);
        try {
          execFileSync("tar", ["-cf", tar, "-C", dir, "."]);
          sb.exitImage = tar;
        } catch {
          /* no snapshot */
        }
      }
      main.exit = { code: code ?? undefined, signal: signal ? 9 : undefined };
      for (const t of sb.tunnels) t.server.close();
      wake(main);
    });
    const timer = setTimeout(() => killGroup(sb, "SIGKILL"), (d.timeoutSecs || 300) * 1000);
    timer.unref();
    for (const [containerPort, localPort] of ports) {
      const server = createTlsServer({ key: tls.key, cert: tls.cert }, (s) => {
        const up = connect(localPort, "127.0.0.1");
        s.pipe(up).pipe(s);
        up.on("error", () => s.destroy());
        s.on("error", () => up.destroy());
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      sb.tunnels.push({ containerPort, host: "127.0.0.1", port: (server.address() as AddressInfo).port, server, localPort });
    }
    sandboxes.set(sb.id, sb);
    byTask.set(sb.taskId, sb);
    return sb;
  }

  const live = (sb: FakeSandbox) => !sb.main.exit;
  const tunnelsOf = (sb: FakeSandbox) => sb.tunnels.map((t) => ({ host: t.host, port: t.port, containerPort: t.containerPort }));
  const routerAccess = () => ({ url: `https://127.0.0.1:${routerPort}`, jwt: jwt() });

  const cp: Record<string, (req: Req, ctx: CallContext) => unknown> = {
    authTokenGet: (_req, ctx) => {
      if (!ctx.metadata.get("x-modal-token-id")) throw new ServerError(Status.UNAUTHENTICATED, "no token");
      return { token: jwt() };
    },
    environmentGetOrCreate: (req) => ({ environmentId: "en-local", metadata: { name: req.deploymentName || "main", settings: { imageBuilderVersion: "2025.06", webhookSuffix: "" } } }),
    appGetOrCreate: (req) => {
      if (!apps.has(req.appName)) {
        if (req.objectCreationType !== 1) throw new ServerError(Status.NOT_FOUND, `App ${req.appName} not found`);
        apps.set(req.appName, rid("ap-"));
      }
      return { appId: apps.get(req.appName) };
    },
    imageGetOrCreate: (req) => {
      const dockerfile = req.image.dockerfileCommands as string[];
      const existing = [...images.entries()].find(([, i]) => JSON.stringify(i.dockerfile) === JSON.stringify(dockerfile));
      const id = existing?.[0] ?? rid("im-");
      images.set(id, { dockerfile });
      return { imageId: id, result: { status: 1, exception: "", exitcode: 0 } };
    },
    imageFromId: (req) => {
      if (!images.has(req.imageId)) throw new ServerError(Status.NOT_FOUND, `Image ${req.imageId} not found`);
      return { imageId: req.imageId };
    },
    imageDelete: (req) => {
      const image = images.get(req.imageId);
      if (!image) throw new ServerError(Status.NOT_FOUND, `Image ${req.imageId} not found`);
      if (image.tar) rmSync(image.tar, { force: true });
      images.delete(req.imageId);
      return {};
    },
    sandboxCreateV2: async (req) => {
      const d = req.definition as Req;
      const appName = [...apps.entries()].find(([, id]) => id === req.appId)?.[0];
      if (!appName) throw new ServerError(Status.NOT_FOUND, `App ${req.appId} not found`);
      if (d.name && [...sandboxes.values()].some((s) => s.appId === req.appId && s.name === d.name && live(s))) {
        throw new ServerError(Status.ALREADY_EXISTS, `Sandbox with name ${d.name} already exists`);
      }
      const env = Object.assign({}, ...((req.secretSources ?? []) as Req[]).map((s) => (s.env?.contents ?? {}) as Record<string, string>)) as Record<string, string>;
      const tags = Object.fromEntries(((req.tags ?? []) as Req[]).map((t) => [t.tagName, t.tagValue]));
      const sb = await startSandbox(req.appId, appName, d, tags, env);
      return { sandboxId: sb.id, taskId: sb.taskId, tunnels: tunnelsOf(sb), commandRouterAccess: routerAccess() };
    },
    sandboxGetFromNameV2: (req) => {
      const appId = apps.get(req.appName);
      const matches = [...sandboxes.values()].filter((s) => s.appId === appId && s.name === req.sandboxName).sort((a, b) => b.createdAt - a.createdAt);
      const sb = matches.find(live) ?? (req.includeTerminated ? matches[0] : undefined);
      if (!sb) throw new ServerError(Status.NOT_FOUND, `Sandbox ${req.sandboxName} not found`);
      return { sandboxId: sb.id };
    },
    sandboxGetCommandRouterAccess: (req) => (must(req.sandboxId), { ...routerAccess(), taskId: must(req.sandboxId).taskId }),
    // Keeps answering with the task after the sandbox exited (the SDK expects that).
    sandboxGetTaskIdV2: (req) => ({ taskId: must(req.sandboxId).taskId }),
    sandboxGetTunnelsV2: (req) => ({ tunnels: tunnelsOf(must(req.sandboxId)) }),
    sandboxWaitV2: async (req) => {
      const sb = must(req.sandboxId);
      const until = Date.now() + (req.timeout ?? 0) * 1000;
      while (!sb.main.exit && Date.now() < until) await Promise.race([changed(sb.main), new Promise((r) => setTimeout(r, Math.max(0, until - Date.now())))]);
      return { result: sb.main.exit ? result(sb) : undefined };
    },
    sandboxTerminateV2: (req) => {
      const sb = must(req.sandboxId);
      if (live(sb)) {
        sb.terminated = true;
        killGroup(sb, "SIGTERM");
        setTimeout(() => killGroup(sb, "SIGKILL"), 2000).unref();
      }
      return {};
    },
    // Modal replaces a sandbox's tags with the given set.
    sandboxTagsSetV2: (req) => {
      const sb = must(req.sandboxId);
      sb.tags = Object.fromEntries(((req.tags ?? []) as Req[]).map((t) => [t.tagName, t.tagValue]));
      return {};
    },
    sandboxTagsGetV2: (req) => ({ tags: Object.entries(must(req.sandboxId).tags).map(([tagName, tagValue]) => ({ tagName, tagValue })) }),
    sandboxListV2: (req) => {
      const tags = (req.tags ?? []) as Req[];
      const match = [...sandboxes.values()]
        .filter((s) => live(s) && (!req.appId || s.appId === req.appId) && tags.every((t) => s.tags[t.tagName] === t.tagValue) && (!req.beforeTimestamp || s.createdAt < req.beforeTimestamp))
        .sort((a, b) => b.createdAt - a.createdAt);
      return { sandboxes: match.map((s) => ({ id: s.id, createdAt: s.createdAt, appId: s.appId, tags: [] })) };
    },
    sandboxGetExitSnapshotV2: (req) => {
      const sb = must(req.sandboxId);
      if (!sb.main.exit) return { pending: {} };
      if (!sb.exitImage) return { error: { errorCode: 3, message: "no exit snapshot for this sandbox" } };
      const id = rid("im-");
      images.set(id, { tar: sb.exitImage });
      return { success: { imageId: id } };
    },
  };

  const mustExec = (req: Req) => {
    const p = mustTask(req.taskId).execs.get(req.execId);
    if (!p) throw new ServerError(Status.NOT_FOUND, `Exec ${req.execId} not found`);
    return p;
  };
  const router: Record<string, (req: Req, ctx: CallContext) => unknown> = {
    taskExecStart: (req, ctx) => {
      if (!String(ctx.metadata.get("authorization") ?? "").startsWith("Bearer ")) throw new ServerError(Status.UNAUTHENTICATED, "no router jwt");
      const sb = mustTask(req.taskId);
      if (sb.main.exit) throw new ServerError(Status.FAILED_PRECONDITION, "the sandbox has exited");
      const argv = (req.commandArgs as string[]).map(sb.rewrite);
      const child = spawn(argv[0]!, argv.slice(1), { cwd: req.workdir ? sb.rewrite(req.workdir) : sb.dir, env: sb.env, detached: true, stdio: ["pipe", "pipe", "pipe"] });
      const p: Proc = { child, out: [Buffer.alloc(0), Buffer.alloc(0)], exit: null, waiters: [] };
      child.stdin!.on("error", () => undefined);
      child.stdout!.on("data", (c: Buffer) => ((p.out[0] = Buffer.concat([p.out[0]!, c])), wake(p)));
      child.stderr!.on("data", (c: Buffer) => ((p.out[1] = Buffer.concat([p.out[1]!, c])), wake(p)));
      child.on("error", () => ((p.exit = { code: 127 }), wake(p)));
      child.on("exit", (code, signal) => ((p.exit = { code: code ?? undefined, signal: signal ? 9 : undefined }), wake(p)));
      sb.execs.set(req.execId, p);
      return {};
    },
    taskExecStdinWrite: async (req) => {
      const p = mustExec(req);
      const data = req.data as Uint8Array | undefined;
      if (data?.length && !p.exit) p.child.stdin!.write(Buffer.from(data));
      if (req.eof && !p.exit) p.child.stdin!.end();
      return {};
    },
    taskExecWait: async (req) => {
      const p = mustExec(req);
      while (!p.exit) await changed(p);
      return p.exit;
    },
    taskExecPoll: (req) => mustExec(req).exit ?? {},

    taskSnapshotFilesystem: (req) => {
      const sb = mustTask(req.taskId);
      const id = rid("im-");
      const tar = join(work, `${id}.tar`);
      execFileSync("tar", ["-cf", tar, "-C", sb.dir, "."]);
      images.set(id, { tar });
      return { imageId: id };
    },
    taskSetNetworkAccess: (req) => {
      const sb = mustTask(req.taskId);
      sb.network = req.networkAccess;
      return {};
    },
  };

  function serve(def: ServiceDef, impl: Record<string, (req: Req, ctx: CallContext) => unknown>) {
    const out: Record<string, unknown> = {};
    for (const [key, m] of Object.entries(def.methods)) {
      const fn = impl[key];
      if (!fn) {
        const fail = () => {
          unimplemented.push(m.name);
          throw new ServerError(Status.UNIMPLEMENTED, `fake-modal does not implement ${def.name}/${m.name}`);
        };
        out[key] = m.responseStream
          ? async function* () {
              fail();
              yield undefined;
            }
          : async () => fail();
        continue;
      }
      out[key] = async (req: Req, ctx: CallContext) => {
        calls.push(m.name);
        while (hanging.has(m.name)) await new Promise((r) => setTimeout(r, 50));
        const f = failures.get(m.name);
        if (f && f.times > 0) {
          f.times--;
          throw new ServerError(f.code, f.message);
        }
        const out = await fn(req, ctx);
        while (hangingAfter.has(m.name)) await new Promise((r) => setTimeout(r, 50));
        return out;
      };
    }
    return out;
  }

  const routerServer: Server = createServer();
  routerServer.add(defs.router as never, serve(defs.router, router) as never);
  routerPort = await routerServer.listen("127.0.0.1:0");
  const cpServer: Server = createServer();
  cpServer.add(defs.cp as never, serve(defs.cp, cp) as never);
  const port = await cpServer.listen("127.0.0.1:0");

  return {
    url: `http://127.0.0.1:${port}`,
    caFile: tls.caFile,
    sandboxes,
    images,
    calls,
    unimplemented,
    failNext: (method, code, message, times = 1) => void failures.set(method, { code, message, times }),
    hang: (method, on) => void (on ? hanging.add(method) : hanging.delete(method)),
    hangAfter: (method, on) => void (on ? hangingAfter.add(method) : hangingAfter.delete(method)),
    running: () => [...sandboxes.values()].filter(live),
    kill(name) {
      for (const sb of sandboxes.values()) if (sb.name === name && live(sb)) killGroup(sb, "SIGKILL");
    },
    async foreign(appName, name, tags) {
      if (!apps.has(appName)) apps.set(appName, rid("ap-"));
      const imageId = rid("im-");
      images.set(imageId, { dockerfile: ["FROM foreign"] });
      return startSandbox(apps.get(appName)!, appName, { name, imageId, entrypointArgs: ["sleep", "600"], timeoutSecs: 600 }, tags, {});
    },
    async close() {
      for (const sb of sandboxes.values()) {
        killGroup(sb, "SIGKILL");
        for (const p of sb.execs.values()) {
          try {
            process.kill(-p.child.pid!, "SIGKILL");
          } catch {
            /* gone */
          }
        }
        for (const t of sb.tunnels) t.server.close();
      }
      await cpServer.shutdown().catch(() => undefined);
      await routerServer.shutdown().catch(() => undefined);
      rmSync(work, { recursive: true, force: true });
    },
  };
}

/** The environment of a compiled daemon whose modal provider talks to `fake`. */
export function modalEnv(fake: FakeModal): Record<string, string> {
  return {
    MODAL_CONFIG_PATH: "/nonexistent/.modal.toml",
    PADDOCK_MODAL_IMAGE: "registry.test/paddock-sandbox:test",
    PADDOCK_MODAL_SERVER_URL: fake.url,
    PADDOCK_MODAL_TUNNEL_CA: fake.caFile,
    PADDOCK_MODAL_TOKEN_ID: "ak-test",
    PADDOCK_MODAL_TOKEN_SECRET: "as-test",
  };
}

export { Status };
