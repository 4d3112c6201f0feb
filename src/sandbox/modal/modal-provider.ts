import type { PoolSpec } from "../docker/docker-provider.js";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { AlreadyExistsError, ModalClient, NotFoundError, ResourceExhaustedError, type App, type Image, type Sandbox } from "modal";
import { SandboxError } from "../../errors.js";
import { PADDOCK_VERSION } from "../../version.js";
import { snapshotKey, takeSnapshotOnce } from "../snapshots.js";
import { LABEL_INSTANCE, LABEL_POOL, LABEL_RUN, LABEL_SANDBOX, RUNNER_PORT } from "../docker/container-spec.js";
import { claimSecretHash } from "../../agent/runner-protocol.js";
import { runnerEnvironment, type RunnerEnv } from "../../agent/runner-env.js";
import { WarmPool, type PoolMember } from "../warm-pool.js";
import { git } from "../git.js";
import { collectWork } from "../import-work.js";
import { runnerEnvOfRun, type CleanupResult, type SandboxProvider, type SandboxSpec, type SandboxStatus, type SnapshotStore } from "../provider.js";
import { prepareSource } from "../repository-source.js";
import { createRunnerClient } from "../runner-client.js";
import { modalNetworkOf, sameNetwork, type ModalNetwork } from "./modal-network.js";
import { CLEANUP_MARGIN_MS, INSTALLED_PADDOCK, MAX_TIMEOUT_MS, memberParams, rescueParams, sandboxParams, TAG_MEMBER, TAG_SNAPSHOT } from "./sandbox-params.js";

export interface ModalProviderOptions {
  instanceId: string;
  /** The Modal App sandboxes live in (created if missing). */
  appName: string;
  /** Modal environment; "" for the SDK's (MODAL_ENVIRONMENT, the profile's, or the workspace default). */
  environment: string;
  /** Registry image the sandboxes start from; it must carry `paddock` on PATH, git and the agents. */
  image: string;
  /** Credentials; "" leaves them to the SDK (MODAL_TOKEN_ID/MODAL_TOKEN_SECRET, ~/.modal.toml). */
  tokenId: string;
  tokenSecret: string;
  /** Control plane URL; "" for the SDK's (MODAL_SERVER_URL, the profile's, api.modal.com). */
  serverUrl: string;
  /** The daemon's data dir: mirrors of remote repositories, and the provider's records. */
  root: string;
  cpus: number;
  memoryBytes: number;
  graceMs: number;
  runnerStartTimeoutMs: number;
  /** How long one control-plane call may take before the daemon gives up on it (the SDK retries inside). */
  callTimeoutMs: number;
  snapshots: SnapshotStore;
  snapshotMaxAgeMs: number;
  /** A sandbox token for a run (cleanup after a restart needs one; none is kept in the sandbox). */
  tokenFor: (runId: string) => Promise<string>;
  /** Where the SDK's own log lines go (the daemon's logger), rather than its stderr. */
  log?: (level: "debug" | "info" | "warn" | "error", message: string, fields: Record<string, unknown>) => void;
  /** The daemon's public key for sandbox tokens (a rescue runner verifies with it). */
  publicKeyPem: string;
  /**
   * A Linux paddock binary to bring into `image` (a plain registry image with git), once per
   * paddock version and base: streamed in through exec stdin, then snapshotted; "" when the
   * image carries paddock itself.
   */
  installPaddock: string;
  /** Ask Modal for an exit snapshot of every sandbox, so a dead one's work can still be taken out. */
  exitSnapshots: boolean;
  /** Started sandboxes kept ready per pool key (--warm-pool); a run's environment may ask for its own; 0 or absent: none. */
  warmPool?: number;
}


/** What provisioning remembers about a sandbox, for cleanup after a restart. */
interface ModalRecord {
  runId: string;
  source: string;
  resultBranch: string;
  repositoryUrl: string;
  /** The Modal image id of the base the sandbox started from (the snapshot key's part). */
  baseImageId: string;
  /** The sandbox_snapshots row it started from; "" for a cold start. */
  snapshotId: string;
  /** Policies per stage, as Modal enforces them. */
  setupNetwork: ModalNetwork;
  agentNetwork: ModalNetwork;
  /**
   * A warm pool member serving the run: Modal cannot rename a sandbox, so the record says
   * which one has this name. Written before the claim, so a restarted daemon finds it.
   */
  sandboxId?: string;
  /** The runner's state directory's name when it is not the run's id (a pool member's). */
  stateName?: string;
}

/** How a sandbox of a run is made: the image (the key's snapshot, else the base with paddock). */
interface ModalPlan {
  image: Image;
  baseTag: string;
  baseImageId: string;
  /** The snapshot row the image is, if any. */
  snapshot: { id: string; createdAt: number } | undefined;
}

/** How a warm pool member of a key is made: its run's plan, stage policy and limits. */
interface MemberRecipe {
  plan: ModalPlan;
  network: ModalNetwork;
  cpus: number;
  memoryMiB: number;
}

/** gRPC status codes the SDK's errors carry. */
const CODE = { CANCELLED: 1, UNKNOWN: 2, DEADLINE_EXCEEDED: 4, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, INTERNAL: 13, UNAVAILABLE: 14, UNAUTHENTICATED: 16 } as const;

/** Modal's errors as run errors: auth and quota are said plainly and not retried; a control plane away or busy is. */
export function modalError(what: string, error: unknown): SandboxError {
  if (error instanceof SandboxError) return error;
  const code = (error as { code?: unknown }).code;
  const message = ((error as { details?: string }).details || (error as Error).message || String(error)).slice(0, 500);
  // Without a gRPC code: the SDK's own refusal to start without usable credentials.
  const noCredentials = code === undefined && /credential|token/i.test(message);
  if (code === CODE.UNAUTHENTICATED || code === CODE.PERMISSION_DENIED || noCredentials) {
    return new SandboxError(`modal: ${what}: authentication failed (set --modal-token-id and --modal-token-secret, MODAL_TOKEN_ID/MODAL_TOKEN_SECRET, or a ~/.modal.toml profile): ${message}`, false, { cause: error });
  }
  if (code === CODE.RESOURCE_EXHAUSTED || error instanceof ResourceExhaustedError) {
    return new SandboxError(`modal: ${what}: quota or capacity exhausted (Modal refused to create more): ${message}`, false, { cause: error });
  }
  const transient: readonly unknown[] = [CODE.CANCELLED, CODE.UNKNOWN, CODE.DEADLINE_EXCEEDED, CODE.INTERNAL, CODE.UNAVAILABLE];
  return new SandboxError(`modal: ${what}: ${message}`, transient.includes(code), { cause: error });
}

/** The SDK logs a message and key, value pairs. */
function sdkLogger(log: NonNullable<ModalProviderOptions["log"]>) {
  const at =
    (level: "debug" | "info" | "warn" | "error") =>
    (message: string, ...args: unknown[]) => {
      const fields: Record<string, unknown> = { provider: "modal" };
      for (let i = 0; i + 1 < args.length; i += 2) fields[String(args[i])] = args[i + 1];
      log(level, message, fields);
    };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/**
 * Sandboxes on Modal (gVisor), one per run attempt, named paddock-<run>-<attempt> in the
 * daemon's App and tagged with its instance id. Modal mounts nothing of the host: the runner
 * listens on an encrypted port reached through Modal's TLS tunnel, the repository goes in as
 * a git bundle (POST /import), and the work comes out as a bundle the runner makes inside the
 * sandbox, fetched into the daemon's repository onto the run's branch only.
 */
export class ModalProvider implements SandboxProvider {
  readonly name = "modal";
  /** A policy Modal cannot express is refused, never run looser. */
  readonly enforcesNetworkPolicy = true;
  /** Modal's own network policy holds no per-request proxy: secrets are never brokered here. */
  readonly brokersSecrets = false;
  readonly isolatesAgents = true;
  private client: ModalClient | null = null;
  private appPromise: Promise<App> | null = null;
  /** Sandboxes this daemon has a handle on, by name (a lookup costs a round trip). */
  private readonly handles = new Map<string, Sandbox>();
  /** Helper sandboxes in use right now (bootstraps, rescues): no run owns them, and the reaper must not take them. */
  private readonly helpers = new Set<string>();
  /** Base images built (looked up at Modal), by registry tag. */
  private readonly bases = new Map<string, Promise<Image>>();
  /** Bases with paddock brought in, by base image id (one bootstrap at a time each). */
  private readonly prepared = new Map<string, Promise<Image>>();
  /** Ready sandboxes by pool key: --warm-pool of each, or its environment's warm_pool. */
  readonly pool: WarmPool<MemberRecipe>;
  /** The pool's members this process made: Modal id and when it was made (a member lives Modal's longest, from then). */
  private readonly members = new Map<string, { id: string; bornAt: number }>();

  constructor(private readonly opts: ModalProviderOptions) {
    this.pool = new WarmPool<MemberRecipe>({
      size: opts.warmPool ?? 0,
      make: (key, recipe, name, secret) => this.makeMember(key, recipe, name, secret),
      recipeId: (recipe) => recipe.plan.image.imageId,
      discard: (name) => this.discardMember(name),
      log: (message, error) => opts.log?.(error ? "warn" : "info", message, { provider: "modal", ...(error ? { err: (error as Error).message } : {}) }),
    });
  }

  private modal(): ModalClient {
    if (!this.client) {
      // The SDK takes its server only from MODAL_SERVER_URL or the profile.
      if (this.opts.serverUrl) process.env.MODAL_SERVER_URL = this.opts.serverUrl;
      try {
        this.client = new ModalClient({
          tokenId: this.opts.tokenId || undefined,
          tokenSecret: this.opts.tokenSecret || undefined,
          environment: this.opts.environment || undefined,
          timeoutMs: this.opts.callTimeoutMs,
          maxRetries: 3,
          ...(this.opts.log ? { logger: sdkLogger(this.opts.log) } : {}),
        });
      } catch (error) {
        throw modalError("client", error);
      }
    }
    return this.client;
  }

  async close(): Promise<void> {
    // Members hold nothing of a run: they go with the daemon (a dead daemon's are reaped at the next start).
    await this.pool.close();
    for (const sb of this.handles.values()) sb.detach();
    this.handles.clear();
    this.client?.close();
    this.client = null;
  }

  /** A control-plane call that cannot hold the daemon up: past the limit it is given up (the SDK retries inside). */
  private async call<T>(what: string, fn: () => Promise<T>, signal?: AbortSignal, ms = this.opts.callTimeoutMs): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new SandboxError(`modal: ${what}: the control plane did not answer within ${Math.round(ms / 1000)}s`, true)), ms);
    });
    let onAbort: (() => void) | undefined;
    const aborted = signal
      ? new Promise<never>((_, reject) => {
          onAbort = () => reject(signal.reason);
          if (signal.aborted) onAbort();
          else signal.addEventListener("abort", onAbort, { once: true });
        })
      : null;
    try {
      return await Promise.race([fn().catch((e: unknown) => Promise.reject(modalError(what, e))), limit, ...(aborted ? [aborted] : [])]);
    } finally {
      clearTimeout(timer);
      if (onAbort) signal!.removeEventListener("abort", onAbort);
    }
  }

  private app(): Promise<App> {
    this.appPromise ??= this.call("app", () => this.modal().apps.fromName(this.opts.appName, { environment: this.opts.environment || undefined, createIfMissing: true })).catch((error: unknown) => {
      this.appPromise = null;
      throw error;
    });
    return this.appPromise;
  }

  private recordPath(name: string): string {
    return join(this.opts.root, "modal", `${name}.json`);
  }

  private async readRecord(name: string): Promise<ModalRecord | null> {
    try {
      return JSON.parse(await readFile(this.recordPath(name), "utf8")) as ModalRecord;
    } catch {
      return null;
    }
  }

  private async writeRecord(name: string, record: ModalRecord): Promise<void> {
    await mkdir(join(this.opts.root, "modal"), { recursive: true, mode: 0o700 });
    await writeFile(this.recordPath(name), JSON.stringify(record), { mode: 0o600 });
  }

  /** The running sandbox `name` of this App, or null; a claimed pool member's through the run's record. */
  private async find(name: string, signal?: AbortSignal): Promise<Sandbox | null> {
    const known = this.handles.get(name);
    if (known) return known;
    const sandboxId = (await this.readRecord(name))?.sandboxId;
    if (sandboxId) {
      const member = await this.call(
        "look up sandbox",
        async () => {
          const sb = await this.modal().sandboxes.fromId(sandboxId);
          try {
            if ((await sb.poll()) === null) return sb;
          } catch (error) {
            if (!(error instanceof NotFoundError)) throw error;
          }
          sb.detach();
          return null;
        },
        signal,
      );
      if (member) this.handles.set(name, member);
      return member;
    }
    const sb = await this.call(
      "look up sandbox",
      async () => {
        try {
          return await this.modal().sandboxes.experimentalFromName(this.opts.appName, name, { environment: this.opts.environment || undefined });
        } catch (error) {
          if (error instanceof NotFoundError) return null;
          throw error;
        }
      },
      signal,
    );
    if (sb) this.handles.set(name, sb);
    return sb;
  }

  /** Each stage's policy as Modal enforces it; a policy it cannot express is the run's error. */
  private networks(spec: Pick<SandboxSpec, "network">): { setup: ModalNetwork; agent: ModalNetwork } {
    if (!spec.network) {
      const open = { allowedDomains: null, describe: "open (no environment)" };
      return { setup: open, agent: open };
    }
    const setup = modalNetworkOf(spec.network.setup);
    const agent = modalNetworkOf(spec.network.agent);
    for (const n of [setup, agent]) if (typeof n === "string") throw new SandboxError(`modal cannot enforce this run's network policy: ${n}`, false);
    return { setup: setup as ModalNetwork, agent: agent as ModalNetwork };
  }

  async provision(spec: SandboxSpec, signal: AbortSignal, progress: (line: string) => void): Promise<SandboxStatus> {
    const networks = this.networks(spec);
    const source = await prepareSource(this.opts.root, spec.repositoryUrl, signal, progress);
    // Made while the sandbox is found, made or claimed: the import needs it either way.
    const bundling = this.bundleOf(source, signal);
    bundling.catch(() => undefined); // awaited (and its error seen) below, or dropped in finally
    try {
      return await this.provisionWith(spec, source, networks, bundling, signal, progress);
    } finally {
      await bundling.then((b) => rm(b.dir, { recursive: true, force: true }), () => undefined);
    }
  }

  private async provisionWith(
    spec: SandboxSpec,
    source: string,
    networks: { setup: ModalNetwork; agent: ModalNetwork },
    bundling: Promise<{ dir: string; file: string }>,
    signal: AbortSignal,
    progress: (line: string) => void,
  ): Promise<SandboxStatus> {
    let record = await this.readRecord(spec.name);
    let sb = await this.find(spec.name, signal);
    if (sb && record?.sandboxId && !(await this.claimLanded(sb, record, signal))) {
      // Its claim was under way when the daemon stopped: nothing of the run ran in it (the agent starts only after the retag).
      progress(`the warm modal sandbox ${record.sandboxId} was being claimed for this run when the daemon stopped; it is terminated and the run starts anew`);
      await this.terminate(sb, signal);
      this.handles.delete(spec.name);
      await rm(this.recordPath(spec.name), { force: true });
      sb = null;
      record = null;
    }
    if (sb) {
      const exit = await this.call("poll sandbox", () => sb!.poll(), signal);
      // It ran and stopped: starting another would run the agent twice.
      if (exit !== null) throw new SandboxError(`modal sandbox ${spec.name} exited (code ${exit}) before the daemon reattached`, false);
      progress(`re-attached to the running modal sandbox ${spec.name}`);
    }
    let missed: string | undefined;
    let claimed: { endpoint: string; tagged: Promise<void>; member: PoolMember } | undefined;
    if (!sb || !record) {
      const plan = await this.plan(spec, signal, progress);
      if (!sb) {
        const warm = await this.fromPool(spec, source, plan, networks, signal, progress);
        if (warm.hit) ({ sb, record, claimed } = warm.hit);
        else missed = warm.key;
      }
      if (!sb || !record) {
        const made = await this.create(spec, source, plan, networks, signal, progress, !!sb);
        sb ??= made.sb;
        record = made.record;
      }
    }
    // A claim answers once the run's runner listens, at the member's endpoint: nothing to wait for.
    const endpoint = claimed?.endpoint ?? (await this.waitForRunner(spec.name, sb, spec.runId, spec.token, signal));
    try {
      await createRunnerClient(endpoint, spec.token).importSource((await bundling).file, signal);
      // The retag ran beside the import; the run is the sandbox's (for list() and a restart) before its agent can start.
      await claimed?.tagged;
    } finally {
      // The refill starts once the run has its repository, so it does not compete with the import.
      if (claimed) this.pool.handedOver(claimed.member);
    }
    // A miss refills its key once its own sandbox is up, not while it is being made.
    if (missed) this.pool.refill(missed);
    const fromSnapshot = !!record.snapshotId;
    progress(
      sameNetwork(networks.setup, networks.agent) || fromSnapshot
        ? `network policy enforced by Modal: ${(fromSnapshot ? networks.agent : networks.setup).describe} (no per-request egress audit on Modal)`
        : `network policy enforced by Modal: setup ${networks.setup.describe}; agent ${networks.agent.describe} (no per-request egress audit on Modal)`,
    );
    // From a snapshot there is nothing to do between setup and agent: setup is skipped and the agent's policy is on from the start.
    return { state: "running", endpoint, setupDone: fromSnapshot, holdAfterSetup: !fromSnapshot };
  }

  private bundlesDir(): string {
    return join(this.opts.root, "modal-bundles");
  }

  /** The daemon's copy of the repository as one bundle (its own git, in its own repository). */
  private async bundleOf(source: string, signal: AbortSignal): Promise<{ dir: string; file: string }> {
    // Under the data dir, not /tmp: a daemon killed mid-provision leaves it where the next one clears it (reconcile).
    await mkdir(this.bundlesDir(), { recursive: true, mode: 0o700 });
    const dir = await mkdtemp(join(this.bundlesDir(), `${process.pid}-`));
    const file = join(dir, "source.bundle");
    try {
      await git(["-c", "core.hooksPath=/dev/null", "bundle", "create", "--quiet", file, "HEAD", "--branches"], { cwd: source, signal });
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
    return { dir, file };
  }

  /**
   * Creates the sandbox from the newest snapshot of its key, else from the base image. A
   * name Modal already has (a create before a crash, or a retry) is looked up instead.
   */
  private async plan(spec: PoolSpec, signal: AbortSignal, progress: (line: string) => void): Promise<ModalPlan> {
    const modal = this.modal();
    const app = await this.app();
    const baseTag = spec.image || this.opts.image;
    // Once per tag and process: Modal answers the same image for the same definition, and a pool hit should not wait on it.
    let building = this.bases.get(baseTag);
    if (!building) {
      const image = modal.images.fromRegistry(baseTag);
      building = this.call("build image", () => image.build(app), undefined, 30 * 60_000).then(() => image);
      this.bases.set(baseTag, building);
      building.catch(() => this.bases.delete(baseTag));
    }
    const pending = building;
    const base = await this.call("build image", () => pending, signal, 30 * 60_000);
    const prepared = this.opts.installPaddock ? await this.withPaddock(app, base, baseTag, signal, progress) : base;
    const key = this.keyFor(spec, prepared.imageId);
    let snapshot = this.opts.snapshots.newestComplete(this.name, key);
    let image: Image = prepared;
    if (snapshot) {
      const found = await this.call("image", async () => {
        try {
          return await modal.images.fromId(snapshot!.externalId);
        } catch (error) {
          if (error instanceof NotFoundError) return null;
          throw error;
        }
      }, signal);
      if (found) image = found;
      else {
        this.opts.snapshots.fail(snapshot.id, `its image ${snapshot.externalId} is gone (removed outside paddock)`);
        progress(`snapshot ${snapshot.externalId} is gone; starting cold from ${baseTag}`);
        snapshot = undefined;
      }
    }
    return { image, baseTag, baseImageId: prepared.imageId, snapshot: snapshot ? { id: snapshot.id, createdAt: snapshot.createdAt } : undefined };
  }

  private async create(
    spec: SandboxSpec,
    source: string,
    plan: ModalPlan,
    networks: { setup: ModalNetwork; agent: ModalNetwork },
    signal: AbortSignal,
    progress: (line: string) => void,
    exists: boolean,
  ): Promise<{ sb: Sandbox; record: ModalRecord }> {
    const modal = this.modal();
    const app = await this.app();
    const { image, baseTag, snapshot } = plan;
    const record: ModalRecord = {
      runId: spec.runId,
      source,
      resultBranch: spec.resultBranch,
      repositoryUrl: spec.repositoryUrl,
      baseImageId: plan.baseImageId,
      snapshotId: snapshot?.id ?? "",
      setupNetwork: networks.setup,
      agentNetwork: networks.agent,
    };
    // Written once the sandbox exists: cleanup never reports the work of one never made as lost.
    const remember = () => this.writeRecord(spec.name, record);
    if (exists) {
      await remember();
      return { sb: (await this.find(spec.name, signal))!, record };
    }
    if (snapshot) this.opts.snapshots.touch(snapshot.id);
    progress(
      snapshot
        ? `creating modal sandbox ${spec.name} from snapshot ${image.imageId} (taken ${new Date(snapshot.createdAt).toISOString()})${spec.setupHash ? "; setup already ran in it and is skipped" : ""}`
        : `creating modal sandbox ${spec.name} from ${baseTag}`,
    );
    // A snapshot's sandbox skips setup: it runs under the agent's policy from the start.
    const network = snapshot ? networks.agent : networks.setup;
    const params = sandboxParams(spec, {
      instanceId: this.opts.instanceId,
      graceMs: this.opts.graceMs,
      cpus: this.opts.cpus,
      memoryBytes: this.opts.memoryBytes,
      network,
      snapshotId: snapshot?.id ?? "",
      exitSnapshots: this.opts.exitSnapshots,
      now: Date.now(),
      installed: !!this.opts.installPaddock,
    });
    // Not abortable once sent: a sandbox made after a cancel is found by name and removed by cleanup.
    const sb = await this.call("create sandbox", async () => {
      try {
        return await modal.sandboxes.create(app, image, params);
      } catch (error) {
        if (error instanceof AlreadyExistsError) return null;
        throw error;
      }
    });
    if (sb) {
      this.handles.set(spec.name, sb);
      await remember();
      progress(`modal sandbox ${spec.name} created (${sb.sandboxId})`);
      return { sb, record };
    }
    const found = await this.find(spec.name, signal);
    if (!found) throw new SandboxError(`modal: sandbox ${spec.name} exists but could not be found by name (it may have just exited)`, true);
    await remember();
    progress(`re-attached to the modal sandbox ${spec.name} made by an earlier attempt`);
    return { sb: found, record };
  }

  /**
   * The pool key of runs like `spec` and how its members are made: the snapshot key, both
   * stages' policy and the limits. A snapshot's sandbox skips setup: it runs under the
   * agent's policy from the start, as a cold one of the key would.
   */
  private poolKey(spec: PoolSpec, plan: ModalPlan, networks: { setup: ModalNetwork; agent: ModalNetwork }): { key: string; recipe: MemberRecipe } {
    const network = plan.snapshot ? networks.agent : networks.setup;
    const cpus = spec.limits.cpus ?? this.opts.cpus;
    const memoryMiB = Math.ceil((spec.limits.memoryBytes ?? this.opts.memoryBytes) / 1024 ** 2);
    const key = createHash("sha256")
      .update(JSON.stringify([this.keyFor(spec, plan.baseImageId), networks.setup.allowedDomains, networks.agent.allowedDomains, cpus, memoryMiB, this.opts.exitSnapshots, !!this.opts.installPaddock]))
      .digest("hex")
      .slice(0, 24);
    return { key, recipe: { plan, network, cpus, memoryMiB } };
  }

  /**
   * Starts `size` members for runs like `spec` ahead of any run (an environment that wants a
   * warm pool, for each repository it lists), as the docker provider does; resolves once
   * the key is known and its fill has begun.
   */
  async prewarm(spec: PoolSpec, size: number): Promise<void> {
    if (size <= 0) return;
    const plan = await this.plan(spec, new AbortController().signal, () => undefined);
    const { key, recipe } = this.poolKey(spec, plan, this.networks(spec));
    this.pool.noteEnvironment(spec.environmentId, key);
    this.pool.want(key, recipe, size);
    this.pool.refill(key);
  }

  /** An environment's warm_pool changed, or (null) it was removed: its keys take the size now (0: the daemon's --warm-pool). */
  resizeEnvironmentPool(environmentId: string, size: number | null): void {
    this.pool.resizeEnvironment(environmentId, size === null ? null : size || this.opts.warmPool || 0);
  }

  /**
   * A pool hit: a ready member of the run's key is claimed (its runner becomes the run's
   * runner) and retagged as the run's; the run's record, written before the claim, says
   * which sandbox serves the run's name (Modal cannot rename one). Its policy and limits
   * are the key's, set when it was made, before anything of the run came in; the
   * repository comes by POST /import as for a cold start. A member that cannot be taken is
   * terminated and the next one tried; none left is a miss (no hit): the caller refills
   * the key once the run's own sandbox is up.
   */
  private async fromPool(
    spec: SandboxSpec,
    source: string,
    plan: ModalPlan,
    networks: { setup: ModalNetwork; agent: ModalNetwork },
    signal: AbortSignal,
    progress: (line: string) => void,
  ): Promise<{ key: string; hit?: { sb: Sandbox; record: ModalRecord; claimed: { endpoint: string; tagged: Promise<void>; member: PoolMember } } }> {
    const { key, recipe } = this.poolKey(spec, plan, networks);
    const size = spec.warmPool || this.opts.warmPool || 0;
    this.pool.noteEnvironment(spec.environmentId, key);
    this.pool.want(key, recipe, size);
    if (size <= 0) return { key };
    const now = Date.now();
    // Modal fixes a sandbox's lifetime when it is made: a member must outlive the run as a cold sandbox would.
    const needed = Math.min(now + MAX_TIMEOUT_MS, (spec.deadlineAt ?? now + 3_600_000) + this.opts.graceMs + CLEANUP_MARGIN_MS);
    for (;;) {
      const member = this.pool.take(key);
      if (!member) {
        progress(`warm pool: no ready modal sandbox for this key`);
        return { key };
      }
      const record: ModalRecord = {
        runId: spec.runId,
        source,
        resultBranch: spec.resultBranch,
        repositoryUrl: spec.repositoryUrl,
        baseImageId: plan.baseImageId,
        snapshotId: plan.snapshot?.id ?? "",
        setupNetwork: networks.setup,
        agentNetwork: networks.agent,
        sandboxId: member.id,
        stateName: member.name,
      };
      try {
        const bornAt = this.members.get(member.name)?.bornAt ?? 0;
        if (bornAt + MAX_TIMEOUT_MS < needed) throw new SandboxError("its lifetime ends before this run's deadline", false);
        const t0 = Date.now();
        // Kept before the claim: after a crash, the run's name must lead to this sandbox.
        await this.writeRecord(spec.name, record);
        const sb = await this.modal().sandboxes.fromId(member.id);
        const tags = {
          [LABEL_INSTANCE]: this.opts.instanceId,
          [LABEL_RUN]: spec.runId,
          [LABEL_SANDBOX]: spec.name,
          [LABEL_POOL]: key,
          [TAG_MEMBER]: member.name,
          ...(plan.snapshot ? { [TAG_SNAPSHOT]: plan.snapshot.id } : {}),
        };
        // Retagged once the runner has recorded the claim (it is the run's runner from then on), while it starts as the run's.
        let tagging: Promise<void> | undefined;
        const retag = () => (tagging ??= this.call("tag sandbox", () => sb.setTags(tags), signal));
        // A pool runner's variables are a runner's environment: the same contract, delivered later.
        await createRunnerClient(member.endpoint, member.secret).claim({ env: runnerEnvironment(runnerEnvOfRun(spec) as RunnerEnv) }, signal, () => void retag().catch(() => undefined));
        const tagged = retag();
        tagged.catch(() => undefined); // the caller awaits it after the import
        this.handles.set(spec.name, sb);
        this.members.delete(member.name);
        progress(`took the warm modal sandbox ${member.name} (${member.id}) as ${spec.name}${plan.snapshot ? ` (from snapshot ${plan.image.imageId})` : ""}: claim ${Date.now() - t0} ms`);
        // Handed over (and its key refilled) by the caller once the run has its repository.
        return { key, hit: { sb, record, claimed: { endpoint: member.endpoint, tagged, member } } };
      } catch (error) {
        progress(`warm modal sandbox ${member.name} could not be taken (${(error as Error).message}); ${signal.aborted ? "stopping" : "trying the next"}`);
        await this.discardMember(member.name).catch(() => undefined);
        this.handles.delete(spec.name);
        await rm(this.recordPath(spec.name), { force: true });
        this.pool.handedOver(member);
        if (signal.aborted) throw error;
      }
    }
  }

  /**
   * Makes a pool member: a sandbox of the recipe with no run in it, its runner answering
   * its claim secret through the tunnel. Terminated again when it does not come up.
   */
  private async makeMember(key: string, recipe: MemberRecipe, name: string, secret: string): Promise<Omit<PoolMember, "recipe">> {
    const app = await this.app();
    const params = memberParams({
      name,
      key,
      claimHash: claimSecretHash(secret),
      instanceId: this.opts.instanceId,
      graceMs: this.opts.graceMs,
      cpus: recipe.cpus,
      memoryMiB: recipe.memoryMiB,
      network: recipe.network,
      exitSnapshots: this.opts.exitSnapshots,
      installed: !!this.opts.installPaddock,
    });
    const bornAt = Date.now();
    const sb = await this.call("create sandbox", () => this.modal().sandboxes.create(app, recipe.plan.image, params));
    this.members.set(name, { id: sb.sandboxId, bornAt });
    try {
      const endpoint = await this.endpointOf(sb);
      const until = Date.now() + this.opts.runnerStartTimeoutMs;
      for (let i = 0; ; i++) {
        const ready = await createRunnerClient(endpoint, secret)
          .poolReady(AbortSignal.timeout(5000))
          .then(() => null, (error: unknown) => (error as Error).message);
        if (ready === null) break;
        if (Date.now() > until) throw new SandboxError(`runner in the pool's modal sandbox ${name} did not answer within ${this.opts.runnerStartTimeoutMs} ms (${ready})`, false);
        if (i % 10 === 9) {
          const exit = await this.call("poll sandbox", () => sb.poll());
          if (exit !== null) throw new SandboxError(`the pool's modal sandbox ${name} exited (code ${exit}) before its runner answered (${ready})`, false);
        }
        await sleep(Math.min(250, 10 * (i + 1))); // start-up latency is what this loop adds
      }
      sb.detach();
      return { name, id: sb.sandboxId, key, secret, endpoint };
    } catch (error) {
      sb.detach();
      await this.discardMember(name).catch(() => undefined);
      throw error;
    }
  }

  /** Terminates a member (ready, or made for a key that no longer wants it). */
  private async discardMember(name: string): Promise<void> {
    const id = this.members.get(name)?.id;
    this.members.delete(name);
    const sb = id ? await this.modal().sandboxes.fromId(id) : await this.find(name);
    this.handles.delete(name);
    if (sb) await this.terminate(sb);
  }

  /** Terminates a sandbox and waits until Modal says it exited (a sandbox already gone is fine). */
  private async terminate(sb: Sandbox, signal?: AbortSignal): Promise<void> {
    await this.call(
      "terminate sandbox",
      async () => {
        try {
          await sb.terminate();
          await sb.wait();
        } catch (error) {
          if (!(error instanceof NotFoundError)) throw error;
        }
      },
      signal,
      this.opts.callTimeoutMs + 60_000,
    );
    sb.detach();
  }

  /** Whether a claimed member's claim completed (it was retagged as the run's: the retag precedes everything of the run). */
  private async claimLanded(sb: Sandbox, record: ModalRecord, signal?: AbortSignal): Promise<boolean> {
    const tags = await this.call("sandbox tags", () => sb.getTags(), signal);
    return tags[LABEL_RUN] === record.runId;
  }

  /**
   * `base` with this paddock binary in it: the image of an earlier bootstrap (a snapshot row
   * keyed by base, version and binary), else a sandbox of the base that receives the binary
   * through exec stdin and is snapshotted once. Later runs start from that image.
   */
  private withPaddock(app: App, base: Image, baseTag: string, signal: AbortSignal, progress: (line: string) => void): Promise<Image> {
    let pending = this.prepared.get(base.imageId);
    if (!pending) {
      pending = this.bootstrap(app, base, baseTag, signal, progress);
      this.prepared.set(base.imageId, pending);
      pending.catch(() => this.prepared.delete(base.imageId));
    }
    return pending;
  }

  private async bootstrap(app: App, base: Image, baseTag: string, signal: AbortSignal, progress: (line: string) => void): Promise<Image> {
    const modal = this.modal();
    const binary = this.opts.installPaddock;
    const digest = createHash("sha256");
    for await (const chunk of createReadStream(binary)) digest.update(chunk as Buffer);
    const key = createHash("sha256").update(["install", base.imageId, PADDOCK_VERSION, digest.digest("hex")].join("\0")).digest("hex").slice(0, 24);
    const done = this.opts.snapshots.newestComplete(this.name, key);
    if (done) {
      const image = await this.call("image", async () => modal.images.fromId(done.externalId).catch((e: unknown) => (e instanceof NotFoundError ? null : Promise.reject(e))), signal);
      if (image) {
        this.opts.snapshots.touch(done.id);
        return image;
      }
      this.opts.snapshots.fail(done.id, `its image ${done.externalId} is gone`);
    }
    progress(`bringing paddock ${PADDOCK_VERSION} into ${baseTag} (once per paddock version)`);
    const row = this.opts.snapshots.begin({ id: `snap_${randomBytes(8).toString("hex")}`, provider: this.name, key, repository: "", commit: "", setupHash: "", baseImageId: base.imageId, paddockVersion: PADDOCK_VERSION, environmentId: "" });
    const name = `paddock-install-${key.slice(0, 16)}`;
    this.helpers.add(name);
    const sb = await this.call("create sandbox", async () => {
      try {
        return await modal.sandboxes.create(app, base, { name, command: ["sleep", "1800"], timeoutMs: 1_800_000, tags: { [LABEL_INSTANCE]: this.opts.instanceId, [LABEL_SANDBOX]: name } });
      } catch (error) {
        if (error instanceof AlreadyExistsError) return modal.sandboxes.experimentalFromName(this.opts.appName, name, { environment: this.opts.environment || undefined });
        throw error;
      }
    });
    try {
      const run = async (argv: string[], input?: string) => {
        const p = await this.call(`exec ${argv[0]}`, () => sb.exec(argv, { mode: "binary", stdout: "ignore", stderr: "ignore" }), signal);
        if (input) {
          const writer = p.stdin.getWriter();
          for await (const chunk of createReadStream(input, { highWaterMark: 1024 * 1024 })) await this.call("write stdin", () => writer.write(new Uint8Array(chunk as Buffer)), signal);
          await this.call("close stdin", () => writer.close(), signal);
        }
        const code = await this.call(`exec ${argv[0]}`, () => p.wait(), signal, 10 * 60_000);
        if (code !== 0) throw new SandboxError(`modal: bringing paddock into ${baseTag}: ${argv.join(" ")} exited with ${code}`, false);
      };
      const dir = INSTALLED_PADDOCK.slice(0, INSTALLED_PADDOCK.lastIndexOf("/"));
      await run(["mkdir", "-p", dir]);
      // Read from fd 0 itself (cat), which works whatever stdin is (a pipe or a socket).
      await run(["sh", "-c", 'cat > "$0"', INSTALLED_PADDOCK], binary);
      await run(["chmod", "755", INSTALLED_PADDOCK]);
      const image = await this.call("snapshot filesystem", () => sb.snapshotFilesystem(), signal, 10 * 60_000);
      if (row) this.opts.snapshots.complete(row.id, image.imageId, 0);
      progress(`paddock ${PADDOCK_VERSION} is in image ${image.imageId}; later runs start from it`);
      return image;
    } catch (error) {
      if (row) this.opts.snapshots.fail(row.id, (error as Error).message);
      throw error;
    } finally {
      await this.call("terminate sandbox", () => sb.terminate()).catch(() => undefined);
      sb.detach();
      this.helpers.delete(name);
    }
  }

  private keyFor(spec: Pick<SandboxSpec, "repositoryUrl" | "setupHash" | "environmentId">, baseImageId: string): string {
    return snapshotKey({ baseImageId, paddockVersion: PADDOCK_VERSION, repositoryUrl: spec.repositoryUrl, setupHash: spec.setupHash ?? "", environmentId: spec.environmentId ?? "", caHash: "" });
  }

  private async endpointOf(sb: Sandbox, signal?: AbortSignal): Promise<string> {
    const tunnels = await this.call("tunnels", () => sb.tunnels(30_000), signal);
    const tunnel = tunnels[RUNNER_PORT];
    if (!tunnel) throw new SandboxError(`modal: sandbox ${sb.sandboxId} has no tunnel to port ${RUNNER_PORT}`, false);
    return tunnel.url;
  }

  /** The runner's tunnel URL once it answers for the run. */
  private async waitForRunner(name: string, sb: Sandbox, runId: string, token: string, signal: AbortSignal): Promise<string> {
    const endpoint = await this.endpointOf(sb, signal);
    const until = Date.now() + this.opts.runnerStartTimeoutMs;
    let last = "not answering yet";
    for (let i = 0; Date.now() < until; i++) {
      signal.throwIfAborted();
      try {
        const health = await createRunnerClient(endpoint, token).health(AbortSignal.any([signal, AbortSignal.timeout(5000)]));
        if (health.runId === runId) return endpoint;
        last = `runner answered for ${health.runId}`;
      } catch (error) {
        last = (error as Error).message;
      }
      if (i % 10 === 9) {
        const exit = await this.call("poll sandbox", () => sb.poll(), signal);
        if (exit !== null) throw new SandboxError(`modal sandbox ${name} exited (code ${exit}) before its runner answered (${last})`, false);
      }
      await sleep(Math.min(250, 10 * (i + 1)), undefined, { signal }); // start-up latency is what this loop adds
    }
    throw new SandboxError(`runner in modal sandbox ${name} did not answer within ${this.opts.runnerStartTimeoutMs} ms (${last})`, false);
  }

  /**
   * After the held runner's setup: a filesystem snapshot for the next runs of the key
   * (unless the sandbox came from one), then the agent's network policy when it differs
   * from setup's. The switch must happen; a snapshot failure only costs the next run time.
   */
  async afterSetup(spec: SandboxSpec, signal: AbortSignal, progress: (line: string) => void): Promise<void> {
    const record = await this.readRecord(spec.name);
    const sb = await this.find(spec.name, signal);
    if (!record || !sb) return;
    const endpoint = await this.endpointOf(sb, signal);
    for (let i = 1; ; i++) {
      signal.throwIfAborted();
      const health = await createRunnerClient(endpoint, spec.token).health(AbortSignal.any([signal, AbortSignal.timeout(5000)])).catch(() => null);
      if (health?.agent === "ready") break;
      if ((health?.agent === "running" && health.stage !== "setup") || health?.agent === "exited") return;
      await sleep(Math.min(250, 10 * i), undefined, { signal }); // setup takes seconds to minutes; without one it is ready at once
    }
    if (!record.snapshotId) await this.takeSnapshot(spec, sb, record, progress, signal);
    if (!record.snapshotId && !sameNetwork(record.setupNetwork, record.agentNetwork)) {
      const domains = record.agentNetwork.allowedDomains;
      await this.call("switch network policy", () => sb.updateNetworkPolicy(domains ? { outboundCidrAllowlist: [], outboundDomainAllowlist: domains } : { outboundCidrAllowlist: ["0.0.0.0/0", "::/0"], outboundDomainAllowlist: [] }), signal);
      progress(`network policy for the agent enforced by Modal: ${record.agentNetwork.describe}`);
    }
  }

  private async takeSnapshot(spec: SandboxSpec, sb: Sandbox, record: ModalRecord, progress: (line: string) => void, signal: AbortSignal): Promise<void> {
    const key = this.keyFor(spec, record.baseImageId);
    await takeSnapshotOnce({ store: this.opts.snapshots, provider: this.name, key, spec, source: record.source, baseImageId: record.baseImageId, progress, signal }, async () => {
      const image = await this.call("snapshot filesystem", () => sb.snapshotFilesystem(), signal, 10 * 60_000);
      return { image: image.imageId, sizeBytes: 0 }; // Modal does not say an image's size
    });
  }

  async inspect(name: string): Promise<SandboxStatus> {
    const sb = await this.find(name);
    if (!sb) return { state: "missing" };
    const exit = await this.call("poll sandbox", () => sb.poll());
    if (exit !== null) return { state: "stopped" };
    return { state: "running", endpoint: await this.endpointOf(sb) };
  }

  /**
   * Takes the agent's work out through the runner's tunnel, then terminates the sandbox. A
   * sandbox that died keeps its work in its exit snapshot when those are on: a sandbox made
   * from it runs a runner (never the agent) for the export. Otherwise the run hears the
   * work was lost.
   */
  async destroy(name: string, signal: AbortSignal): Promise<CleanupResult> {
    const record = await this.readRecord(name);
    const sb = await this.find(name, signal);
    const running = sb ? (await this.call("poll sandbox", () => sb.poll(), signal)) === null : false;
    const result: CleanupResult = {};
    // A member whose claim never completed holds nothing of the run: no work to take out.
    const unclaimed = !!(running && record?.sandboxId && !(await this.claimLanded(sb!, record, signal).catch(() => false)));
    if (record && !unclaimed) {
      try {
        if (running) Object.assign(result, await this.export(name, sb!, record, signal));
        else Object.assign(result, await this.exportDead(name, record, signal));
      } catch (error) {
        if (signal.aborted) throw error;
        result.notes = [`the agent's work could not be taken out: ${(error as Error).message}`];
      }
    }
    if (sb) {
      await this.call("terminate sandbox", async () => {
        try {
          await sb.terminate();
          // Removed means ended: the run is cleaned only once Modal says the sandbox exited.
          await sb.wait();
        } catch (error) {
          if (!(error instanceof NotFoundError)) throw error;
        }
      }, signal, this.opts.callTimeoutMs + 60_000);
      sb.detach();
    }
    this.handles.delete(name);
    await rm(this.recordPath(name), { force: true });
    return result;
  }

  private async export(name: string, sb: Sandbox, record: ModalRecord, signal: AbortSignal): Promise<CleanupResult> {
    const token = await this.opts.tokenFor(record.runId);
    const endpoint = await this.waitForRunner(name, sb, record.runId, token, signal);
    const runner = createRunnerClient(endpoint, token);
    const health = await runner.health(signal);
    // Never imported (cancelled early): there is no work to take.
    if (health.agent === "starting" && health.lastSeq === 0) return {};
    const timeout = AbortSignal.any([signal, AbortSignal.timeout(this.opts.graceMs + 120_000)]);
    const result = await collectWork(runner, { source: record.source, resultBranch: record.resultBranch, scratch: join(this.opts.root, "cleanup", name), signal, timeout });
    await runner.shutdown(timeout).catch(() => undefined);
    return result;
  }

  /** A sandbox that is gone: its exit snapshot, when there is one, else the run says what was lost. */
  private async exportDead(name: string, record: ModalRecord, signal: AbortSignal): Promise<CleanupResult> {
    const lost = { notes: [`modal sandbox ${name} is gone (it exited or was terminated outside paddock); the agent's work in it was lost${this.opts.exitSnapshots ? "" : " (exit snapshots are off: --modal-exit-snapshots)"}`] };
    if (!this.opts.exitSnapshots) return lost;
    const dead = await this.call("look up sandbox", async () => {
      try {
        // A claimed pool member has another name: the record says which sandbox it is.
        if (record.sandboxId) return await this.modal().sandboxes.fromId(record.sandboxId);
        return await this.modal().sandboxes.experimentalFromName(this.opts.appName, name, { environment: this.opts.environment || undefined, includeTerminated: true });
      } catch (error) {
        if (error instanceof NotFoundError) return null;
        throw error;
      }
    }, signal);
    if (!dead) return lost;
    const image = await this.call("exit snapshot", () => dead.experimentalGetExitSnapshot(), signal).catch(() => null);
    dead.detach();
    if (!image) return lost;
    // A runner in a sandbox made from the snapshot: it finds the agent's records without an exit and never starts it.
    const app = await this.app();
    const rescueName = `${name}-exit`;
    this.helpers.add(rescueName);
    const publicKeyPem = await this.publicKey(record.runId);
    let rescue = await this.find(rescueName, signal);
    rescue ??= await this.call("create sandbox", () =>
      this.modal().sandboxes.create(app, image, rescueParams(rescueName, record.runId, record.resultBranch, this.opts.instanceId, publicKeyPem, !!this.opts.installPaddock, record.stateName)),
    );
    this.handles.set(rescueName, rescue);
    try {
      const result = await this.export(rescueName, rescue, record, signal);
      return { ...result, notes: [`modal sandbox ${name} died; its work was recovered from its exit snapshot`, ...(result.notes ?? [])] };
    } finally {
      await this.call("terminate sandbox", () => rescue.terminate()).catch(() => undefined);
      rescue.detach();
      this.handles.delete(rescueName);
      this.helpers.delete(rescueName);
    }
  }

  /** The runner verifies tokens with the daemon's public key; the rescue runner needs it too. */
  private publicKey(_runId: string): Promise<string> {
    if (!this.opts.publicKeyPem) throw new SandboxError("modal: no public key for a rescue runner", false);
    return Promise.resolve(this.opts.publicKeyPem);
  }

  async list(): Promise<string[]> {
    const app = await this.app();
    const { names, members } = await this.call("list sandboxes", async () => {
      const found: string[] = [];
      const members: { name: string; id: string }[] = [];
      for await (const sb of this.modal().sandboxes.list({ appId: app.appId, tags: { [LABEL_INSTANCE]: this.opts.instanceId } })) {
        const tags = await sb.getTags();
        sb.detach();
        if (tags[LABEL_INSTANCE] !== this.opts.instanceId) continue;
        if (tags[LABEL_SANDBOX]) found.push(tags[LABEL_SANDBOX]);
        else if (tags[TAG_MEMBER]) members.push({ name: tags[TAG_MEMBER], id: sb.sandboxId });
      }
      return { names: found, members };
    }, undefined, 120_000);
    // Bundles an earlier daemon process was making when it died.
    for (const stale of await readdir(this.bundlesDir()).catch(() => [] as string[])) {
      if (!stale.startsWith(`${process.pid}-`)) await rm(join(this.bundlesDir(), stale), { recursive: true, force: true });
    }
    // Records of sandboxes Modal no longer runs: cleanup says what became of their work.
    const records = (await readdir(join(this.opts.root, "modal")).catch(() => [] as string[])).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5));
    // Unclaimed members of an earlier daemon process are orphans; this pool's own are not, nor one a run's record names (its claim was under way).
    const claimed = new Set<string>();
    if (members.length > 0) for (const r of records) {
      const id = (await this.readRecord(r))?.sandboxId;
      if (id) claimed.add(id);
    }
    const orphans = members.filter((m) => !this.pool.owns(m.name) && !claimed.has(m.id)).map((m) => m.name);
    return [...new Set([...names, ...records, ...orphans])].filter((n) => !this.helpers.has(n));
  }

  /** Removes snapshot images unused for longer than the limit (ImageDelete), and rows a crash left behind. */
  async collectGarbage(): Promise<number> {
    let removed = 0;
    const now = Date.now();
    for (const s of this.opts.snapshots.list(this.name)) {
      const stale = s.status === "in_progress" && now - s.createdAt > 3_600_000;
      const old = now - s.lastUsedAt > this.opts.snapshotMaxAgeMs;
      if (s.status === "in_progress" && !stale) continue;
      if (s.status === "complete" && !old) continue;
      if (s.externalId) {
        const gone = await this.call("delete image", async () => {
          try {
            await this.modal().images.delete(s.externalId);
          } catch (error) {
            if (!(error instanceof NotFoundError)) throw error;
          }
          return true;
        }).catch(() => false);
        if (!gone) continue;
      }
      this.opts.snapshots.remove(s.id);
      removed++;
    }
    return removed;
  }
}
