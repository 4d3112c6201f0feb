import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type Docker from "dockerode";
import { SandboxError } from "../../errors.js";
import { EgressProxy, type EgressProxyOptions } from "../egress-proxy.js";
import { snapshotKey, takeSnapshotOnce } from "../snapshots.js";
import { ensureEgressNetwork, ensureOpenNetwork, firewallEgressNetwork, firewallOpenNetwork, firewallProblem, type EgressNetwork } from "./egress-network.js";
import type { CleanupKeep, CleanupResult, HandoffSink, SandboxProvider, SandboxSpec, SandboxStatus, SnapshotStore } from "../provider.js";
import { PADDOCK_VERSION } from "../../version.js";
import { importHandoff } from "../import-handoff.js";
import { collectWork, importWork } from "../import-work.js";
import type { GitCredentialSource } from "../git-credentials.js";
import { prepareSource } from "../repository-source.js";
import { collectNotServed, createRunnerClient, type RunnerClient } from "../runner-client.js";
import { containerSpec, LABEL_INSTANCE, LABEL_POOL, LABEL_RUN, poolContainerSpec, RUNNER_PORT, SOURCE_MOUNT, WORKSPACE, type ContainerLimits } from "./container-spec.js";
import { HARDENED_GIT_CONFIG } from "../../agent/sandbox-git.js";
import { RUN_VARIABLES, runnerEnvironment, type RunnerEnv } from "../../agent/runner-env.js";
import { claimSecretHash, SETTLED_FILE, type CollectManifest } from "../../agent/runner-protocol.js";
import { WarmPool, type PoolMember } from "../warm-pool.js";
import { addressOf, holderOf, holderSpec, networkKey, servingHolders } from "./network-holders.js";
import { runnerEnvOfRun } from "../provider.js";

export interface DockerProviderOptions {
  docker: Docker;
  image: string;
  instanceId: string;
  /** The daemon's data dir: mirrors of remote repositories live in <root>/repos. */
  root: string;
  /** Tokens for cloning private repositories on the daemon's git host (given to git alone, never the sandbox). */
  gitCredentials?: GitCredentialSource;
  limits: ContainerLimits;
  /** Time the runner gives a cancelled agent between SIGTERM and SIGKILL. */
  graceMs: number;
  runnerStartTimeoutMs: number;
  snapshots: SnapshotStore;
  /** Snapshots unused for longer are removed. */
  snapshotMaxAgeMs: number;
  /** Total size kept; least recently used snapshots go first beyond it. */
  snapshotMaxBytes: number;
  /** A sandbox token for a run: cleanup after a restart needs one, and none is kept in the container. */
  tokenFor: (runId: string) => Promise<string>;
  /** Network policy enforcement; without it, restricted runs are refused. */
  egress: Omit<EgressProxyOptions, "host"> | null;
  /** Addresses unrestricted sandboxes may reach although private or the host's own. */
  allowCidrs: readonly string[];
  /** Problems the operator must hear about at start, before any run meets them. */
  warn: (message: string) => void;
  /** What the operator may want to follow (the warm pool's members). */
  info?: (message: string) => void;
  /** What only someone debugging wants (network holders made). */
  debug?: (message: string) => void;
  /** PEM CA certificates (a host file) every sandbox trusts; "" for none. */
  caFile?: string;
  /** Started sandboxes kept ready per pool key (see WarmPool); 0 or absent: none. */
  warmPool?: number;
  /**
   * Network holders kept ready per network a run used (see network-holders.ts): a sandbox
   * that is not a warm pool's joins one instead of having its network set up as it starts.
   * 0 or absent: none.
   */
  warmNetworks?: number;
}

/**
 * How the sandbox of a run is made; runs whose plans have the same key get
 * interchangeable containers (same image, repository mount, network, limits, CA), so a
 * warm pool keeps its members by it.
 */
interface CreatePlan {
  /** The pool key: runs of one key get interchangeable containers. */
  key: string;
  base: string;
  image: string;
  snapshot?: { id: string; externalId: string; commit: string; createdAt: number };
  source: string;
  limits: ContainerLimits;
  networkMode: string | undefined;
}

/** What decides a sandbox's pool key, known before any run: a run's spec, or an environment's. */
export type PoolSpec = Pick<SandboxSpec, "repositoryUrl" | "image" | "network" | "brokered" | "limits" | "setupHash" | "environmentId">;

/** A container's work on its way out (<root>/cleanup/<name>/work.json, beside work.bundle). */
interface StagedWork {
  source: string;
  resultBranch: string;
  head: string;
  agentBranch: string;
  bundled: boolean;
}

/** What the daemon keeps of a claimed pool member (the container's own labels and environment cannot say it). */
interface ClaimRecord {
  runId: string;
  resultBranch: string;
}

const SNAPSHOT_REPO = "paddock-snapshot";
/** On snapshot images: the sandbox_snapshots row they belong to (with LABEL_INSTANCE, this daemon's). */
export const LABEL_SNAPSHOT = "paddock.snapshot";
/** On the container that settles a new snapshot's index (settleIndex): the daemon's instance id. */
const LABEL_SETTLE = "paddock.settle";
/** Where the operator's CA certificates appear in a sandbox (read-only). */
const CA_MOUNT = "/paddock/ca-certificates.pem";

interface DockerErrorLike {
  statusCode?: number;
  message: string;
}
const isNotFound = (e: unknown) => (e as DockerErrorLike).statusCode === 404;
const isConflict = (e: unknown) => (e as DockerErrorLike).statusCode === 409;

/** Docker's own errors: the engine being away or busy may pass; a bad request will not. */
function dockerError(what: string, error: unknown): SandboxError {
  const status = (error as DockerErrorLike).statusCode;
  const retryable = status === undefined || status >= 500;
  return new SandboxError(`docker: ${what}: ${(error as Error).message}`, retryable, { cause: error });
}

/**
 * Sandboxes as containers of the sandbox image, one per run attempt, named
 * paddock-<run>-<attempt> and labelled with this daemon's instance id. The repository is
 * cloned inside from the host's copy, mounted read-only; at cleanup the runner bundles the
 * agent's work inside the container and only the run's branch is fetched back.
 */
export class DockerProvider implements SandboxProvider {
  readonly name = "docker";
  readonly isolatesAgents = true;
  readonly collectsHandoff = true;
  private egress: { proxy: EgressProxy; network: EgressNetwork } | null = null;
  private egressSetup: Promise<void> | null = null;
  private egressProblem: string | null = null;
  private openSetup: Promise<{ name: string | undefined; problem: string | null }> | null = null;

  private readonly caHash: string;
  /** Snapshots whose index is being settled (settleIndex). */
  private readonly settling = new Set<Promise<void>>();
  /** Ready sandboxes by plan key: --warm-pool of each, or its environment's warm_pool. */
  readonly pool: WarmPool<CreatePlan>;
  /** Ready network holders by network (--warm-networks of each); the recipe is the network. */
  readonly holders: WarmPool<string>;
  /** Holders' addresses by container id: a sandbox in one answers there. */
  private readonly holderAddresses = new Map<string, string>();

  constructor(private readonly opts: DockerProviderOptions) {
    if (!opts.egress) this.egressProblem = "egress enforcement is not configured";
    this.caHash = opts.caFile ? createHash("sha256").update(readFileSync(opts.caFile)).digest("hex") : "";
    this.pool = new WarmPool<CreatePlan>({
      size: opts.warmPool ?? 0,
      make: (key, plan, name, secret) => this.makeMember(key, plan, name, secret),
      recipeId: (plan) => plan.image,
      discard: (name) => this.removeContainer(name),
      log: (message, error) => (error ? opts.warn(`${message}: ${(error as Error).message}`) : opts.info?.(message)),
    });
    this.holders = new WarmPool<string>({
      size: opts.warmNetworks ?? 0,
      prefix: "paddock-net-",
      title: { pool: "network holders", member: "a holder" },
      make: (key, network, name) => this.makeHolder(key, network, name),
      recipeId: (network) => network,
      discard: (name) => this.removeContainer(name),
      log: (message, error) => (error ? opts.warn(`${message}: ${(error as Error).message}`) : opts.debug?.(message)),
    });
  }

  get enforcesNetworkPolicy(): boolean {
    return this.egressProblem === null;
  }

  /** A run with brokered secrets goes on the egress network whatever its policy: the proxy is its only way out. */
  get brokersSecrets(): boolean {
    return this.egressProblem === null && !!this.opts.egress?.ca;
  }

  /**
   * Sets up enforcement on first need: the internal network, the proxy on its gateway,
   * the firewall. When a step fails, restricted runs are refused (never let through).
   */
  private ensureEgress(): Promise<void> {
    this.egressSetup ??= this.setUpEgress();
    return this.egressSetup;
  }

  private async setUpEgress(): Promise<void> {
    if (!this.opts.egress) return;
    try {
      const network = await ensureEgressNetwork(this.opts.docker, this.opts.instanceId);
      const proxy = new EgressProxy({ ...this.opts.egress, host: network.gateway });
      await proxy.start();
      try {
        await firewallEgressNetwork(network, proxy.port, this.opts.instanceId);
      } catch (error) {
        await proxy.stop();
        throw error;
      }
      this.egress = { proxy, network };
    } catch (error) {
      this.egressProblem = `network policy cannot be enforced: ${(error as Error).message}`;
    }
  }

  /**
   * The network for sandboxes without a restricted policy, fenced off the host, private
   * ranges and other sandboxes. When the fence cannot be built they still run (on that
   * network, or Docker's default one) and the problem is returned for the run to say.
   * A failure is retried at the next run.
   */
  private ensureOpen(): Promise<{ name: string | undefined; problem: string | null }> {
    this.openSetup ??= (async () => {
      let name: string | undefined;
      try {
        const network = await ensureOpenNetwork(this.opts.docker, this.opts.instanceId);
        name = network.name;
        await firewallOpenNetwork(network, this.opts.instanceId, this.opts.allowCidrs);
        return { name, problem: null };
      } catch (error) {
        this.openSetup = null;
        return { name, problem: notIsolated((error as Error).message) };
      }
    })();
    return this.openSetup;
  }

  /** The open network's name (undefined: Docker's default); the run hears when it is not fenced. */
  private async openNetwork(progress: (line: string) => void): Promise<string | undefined> {
    const open = await this.ensureOpen();
    if (open.problem) progress(open.problem);
    return open.name;
  }

  /**
   * After a restart, restricted sandboxes still running need their proxy back at once, and
   * snapshots a crash interrupted are finished or forgotten.
   */
  async init(): Promise<string | null> {
    await this.recoverSnapshots().catch((error: unknown) => this.opts.warn(`snapshots interrupted by a crash were not recovered: ${(error as Error).message}`));
    // A snapshot's index settling when the daemon stopped: its tag kept the first image.
    const settlers = await this.opts.docker.listContainers({ all: true, filters: { label: [`${LABEL_SETTLE}=${this.opts.instanceId}`] } }).catch(() => []);
    for (const c of settlers) await this.removeContainer(c.Id).catch(() => undefined);
    // The fence is rebuilt at each start (a reboot loses it); it is only probed while the
    // open network does not exist yet, so a daemon that never runs docker makes none.
    const openExists = await this.opts.docker
      .getNetwork(`paddock-open-${this.opts.instanceId}`)
      .inspect()
      .then(() => true, () => false);
    const isolation = openExists ? (await this.ensureOpen()).problem : await firewallProblem().then((p) => p && notIsolated(p));
    if (isolation) this.opts.warn(isolation);
    const names = await this.list().catch(() => [] as string[]);
    if (names.length > 0 && this.opts.egress) {
      const network = `paddock-egress-${this.opts.instanceId}`;
      const onIt = await this.opts.docker
        .listContainers({ all: true, filters: { label: [`${LABEL_INSTANCE}=${this.opts.instanceId}`], network: [network] } })
        .catch(() => []);
      if (onIt.length > 0) await this.ensureEgress();
    }
    return this.egressProblem;
  }

  async close(): Promise<void> {
    await this.snapshotsSettled();
    await Promise.all([this.pool.close(), this.holders.close()]);
    await this.egress?.proxy.stop();
  }

  /** Whether the sandbox reaches out only through the egress proxy: a restricted policy, or brokered secrets. */
  private restricted(network: SandboxSpec["network"], brokered = false): boolean {
    return brokered || (!!network && (network.setup.access !== "full" || network.agent.access !== "full"));
  }

  stageEnv(runId: string, network: SandboxSpec["network"], brokered = false): { setup: Record<string, string>; agent: Record<string, string> } {
    if (!this.restricted(network, brokered) || !this.egress) return { setup: {}, agent: {} };
    const proxyEnv = (url: string) => ({ HTTP_PROXY: url, HTTPS_PROXY: url, http_proxy: url, https_proxy: url, NO_PROXY: "", no_proxy: "" });
    return { setup: proxyEnv(this.egress.proxy.urlFor(runId, "setup")), agent: proxyEnv(this.egress.proxy.urlFor(runId, "agent")) };
  }

  async provision(spec: SandboxSpec, signal: AbortSignal, progress: (line: string) => void): Promise<SandboxStatus> {
    const { docker } = this.opts;
    const source = await prepareSource(this.opts.root, spec.repositoryUrl, signal, progress, this.opts.gitCredentials);
    if (spec.handoff) await importHandoff(source, spec.runId, spec.handoff, signal);
    let container = docker.getContainer(spec.name);
    let plan: CreatePlan | undefined;
    // Looked up beside the container (a new run's has none): one engine round trip fewer on the way to a pool hit.
    const baseImage = this.baseImage(spec);
    void baseImage.catch(() => undefined); // unused when the container exists
    const info = await container.inspect().catch((e: unknown) => (isNotFound(e) ? null : Promise.reject(dockerError("inspect", e))));
    if (info && info.Config.Labels?.[LABEL_INSTANCE] !== this.opts.instanceId) {
      throw new SandboxError(`a container named ${spec.name} exists and is not this daemon's`, false);
    }
    let holder: PoolMember | undefined;
    let status: SandboxStatus;
    try {
      if (info?.State.Running) {
        progress(`re-attached to the running container ${spec.name}`);
      } else if (info && info.State.Status !== "created") {
        // It ran and stopped: starting it again would run the agent twice.
        throw new SandboxError(`container ${spec.name} is ${info.State.Status} (exit code ${info.State.ExitCode})${await this.tail(spec.name)}`, false);
      } else {
        if (!info) {
          plan = await this.plan(spec, source, progress, baseImage);
          const warm = await this.fromPool(spec, plan, signal, progress);
          if (warm) return warm;
          ({ container, holder } = await this.create(spec, plan, signal, progress));
        }
        signal.throwIfAborted();
        await this.startContainer(container, info);
        progress(`container ${spec.name} started`);
      }
      status = await this.waitForRunner(spec, signal);
    } finally {
      // Its sandbox joined it (or the holder was removed): the pool makes the next one now.
      if (holder) this.holders.handedOver(holder);
    }
    // A miss refills its key once its own sandbox is up, not while it is being made.
    if (plan) {
      this.pool.refill(plan.key);
      this.holders.refill(networkKey(plan.networkMode));
    }
    // A sandbox made from a snapshot has its image's label: setup already ran in it (the plan says so for one made just now).
    const fromSnapshot = plan ? !!plan.snapshot : !!(await container.inspect().catch((e: unknown) => Promise.reject(dockerError("inspect", e)))).Config.Labels?.[LABEL_SNAPSHOT];
    return { ...status, setupDone: fromSnapshot, holdAfterSetup: !fromSnapshot, caFile: this.opts.caFile ? CA_MOUNT : undefined };
  }

  /**
   * How the sandbox's container is to be made: from the newest snapshot of its key, else
   * from the base image (a snapshot whose image is gone is marked, GC removes the row, and
   * skipped), on the network its policy needs, with its limits.
   */
  private async plan(spec: PoolSpec, source: string, progress: (line: string) => void, baseImageInfo = this.baseImage(spec)): Promise<CreatePlan> {
    const base = spec.image || this.opts.image;
    const baseImage = await baseImageInfo;
    const limits = await this.limitsFor(spec);
    const restricted = this.restricted(spec.network, spec.brokered);
    if (restricted) await this.ensureEgress();
    if (restricted && !this.egress) throw new SandboxError(this.egressProblem ?? "egress is not ready", false);
    const networkMode = restricted ? this.egress!.network.name : await this.openNetwork(progress);
    // The snapshot key (base image by id, repository, setup, environment, CA) and what the
    // container is made with besides; the image (a snapshot of the key, once there is one) is its recipe.
    const key = createHash("sha256")
      .update(JSON.stringify([this.keyFor(spec, baseImage.Id), source, networkMode ?? "", limits]))
      .digest("hex")
      .slice(0, 24);
    let snapshot = this.opts.snapshots.newestComplete(this.name, this.keyFor(spec, baseImage.Id));
    // A ready pool member made from the snapshot's image shows it is there (the engine
    // keeps an image its containers use): no need to ask.
    if (snapshot && !this.pool.hasReady(key, snapshot.externalId) && !(await this.imageExists(snapshot.externalId))) {
      this.opts.snapshots.fail(snapshot.id, `its image ${snapshot.externalId} is gone (removed outside paddock)`);
      progress(`snapshot ${snapshot.externalId} is gone (removed outside paddock); starting cold from ${base}`);
      snapshot = undefined;
    }
    const image = snapshot?.externalId ?? base;
    if (snapshot) this.opts.snapshots.touch(snapshot.id);
    return { key, base, image, snapshot, source, limits, networkMode };
  }

  /** The image a sandbox of the spec is based on (its own, or the daemon's), as the engine has it. */
  private baseImage(spec: Pick<SandboxSpec, "image">): Promise<Docker.ImageInspectInfo> {
    const base = spec.image || this.opts.image;
    return this.opts.docker
      .getImage(base)
      .inspect()
      .catch((e: unknown) => {
        if (!isNotFound(e)) throw dockerError("inspect image", e);
        throw new SandboxError(`docker: image ${base} not found (${base === this.opts.image ? "build it: npm run images" : "pull or build it on the daemon's host"})`, false);
      });
  }

  /**
   * Creates the sandbox's container as planned: in a ready network holder's namespace when
   * there is one (its network set up already, on the plan's network), else on the network.
   * The holder is the container's from then on, removed with it.
   */
  private async create(spec: SandboxSpec, plan: CreatePlan, signal: AbortSignal, progress: (line: string) => void): Promise<{ container: Docker.Container; holder?: PoolMember }> {
    const { docker } = this.opts;
    const { snapshot, image, base } = plan;
    const holder = this.takeHolder(plan);
    progress(
      snapshot
        ? `creating container ${spec.name} from snapshot ${image} (taken ${new Date(snapshot.createdAt).toISOString()} at ${snapshot.commit.slice(0, 12)})${spec.setupHash ? "; setup already ran in it and is skipped" : ""}`
        : `creating container ${spec.name} from ${image}`,
    );
    if (holder) progress(`its network: network holder ${holder.name}'s, set up before the run`);
    const networkMode = holder ? `container:${holder.id}` : plan.networkMode;
    const create = this.withCa(containerSpec(spec, { image, instanceId: this.opts.instanceId, source: plan.source, limits: plan.limits, networkMode }));
    try {
      signal.throwIfAborted();
      return { container: await docker.createContainer(create), holder };
    } catch (e) {
      // No container of this run joined the holder: it goes.
      if (holder) {
        await this.removeHolder(holder.id).catch(() => undefined);
        this.holders.handedOver(holder);
      }
      if (signal.aborted) throw e;
      if (isConflict(e)) return { container: docker.getContainer(spec.name) }; // created by a previous attempt of this very call
      if (isNotFound(e) && snapshot) {
        // Removed between the check and the create: the retry starts cold.
        this.opts.snapshots.fail(snapshot.id, `its image ${image} is gone (removed outside paddock)`);
        throw new SandboxError(`snapshot ${image} was removed while the sandbox was being created`, true);
      }
      if (isNotFound(e)) throw new SandboxError(`docker: image ${base} not found`, false);
      throw dockerError("create", e);
    }
  }

  private withCa(create: Docker.ContainerCreateOptions): Docker.ContainerCreateOptions {
    if (this.opts.caFile) create.HostConfig = { ...create.HostConfig, Binds: [...(create.HostConfig?.Binds ?? []), `${this.opts.caFile}:${CA_MOUNT}:ro`] };
    return create;
  }

  /**
   * A pool hit: a ready member of the plan's key is claimed for the run (its runner checks
   * the repository out and becomes the run's runner) and renamed to the run's sandbox name,
   * so everything after finds it as it finds a container made for the run. Its network
   * is its key's, set when it was made, before anything of the run came in. A member that
   * cannot be taken is removed and the next one tried; none left is a miss (null), and
   * either way the key is refilled in the background.
   */
  private async fromPool(spec: SandboxSpec, plan: CreatePlan, signal: AbortSignal, progress: (line: string) => void): Promise<SandboxStatus | null> {
    const size = spec.warmPool || this.opts.warmPool || 0;
    this.pool.noteEnvironment(spec.environmentId, plan.key);
    this.pool.want(plan.key, plan, size);
    if (size <= 0) return null;
    for (;;) {
      const member = this.pool.take(plan.key);
      if (!member) {
        progress(`warm pool: no ready sandbox for this key`);
        return null;
      }
      const container = this.opts.docker.getContainer(member.id);
      try {
        const t0 = Date.now();
        // Kept before the claim: after a crash, cleanup must know whose work the container holds.
        await this.writeClaim(member.id, { runId: spec.runId, resultBranch: spec.resultBranch });
        const t1 = Date.now();
        // Renamed once the runner has recorded the claim (it is the run's runner from then
        // on, restarts included), while its checkout goes on: a crash after the rename
        // leaves the run's container with the run's runner in it, as a cold start would.
        let renaming: Promise<Error | null> | undefined;
        let renamedAt = 0;
        const rename = () =>
          (renaming ??= container.rename({ name: spec.name }).then(
            () => ((renamedAt = Date.now()), null),
            (e: unknown) => (e instanceof Error ? e : new Error(String(e))),
          ));
        // A pool runner's variables are a runner's environment: the same contract, delivered later.
        await createRunnerClient(member.endpoint, member.secret).claim({ env: runnerEnvironment(runnerEnvOfRun(spec) as RunnerEnv) }, signal, () => void rename());
        const t2 = Date.now();
        const renameError = await rename();
        if (renameError) throw dockerError("rename", renameError);
        this.pool.handedOver(member);
        progress(
          `took the warm sandbox ${member.name} as ${spec.name}${plan.snapshot ? ` (from snapshot ${plan.image})` : ""}: claim ${t2 - t1} ms, claim record ${t1 - t0} ms, rename done ${renamedAt - t2} ms after the claim`,
        );
        const fromSnapshot = !!plan.snapshot;
        return { state: "running", endpoint: member.endpoint, setupDone: fromSnapshot, holdAfterSetup: !fromSnapshot, caFile: this.opts.caFile ? CA_MOUNT : undefined };
      } catch (error) {
        progress(`warm sandbox ${member.name} could not be taken (${(error as Error).message}); ${signal.aborted ? "stopping" : "trying the next"}`);
        await this.removeContainer(member.id).catch(() => undefined);
        await this.dropClaim(member.id);
        this.pool.handedOver(member);
        if (signal.aborted) throw error;
      }
    }
  }

  /**
   * Starts `size` pool members for runs like `spec` ahead of any run (an environment that
   * wants a warm pool, for each of its repositories), in the background; best effort: a
   * run that differs (another image, limits, brokered secrets…) misses and teaches the pool
   * its own key. Resolves once the key is known and its fill has begun.
   */
  async prewarm(spec: PoolSpec, size: number): Promise<void> {
    if (size <= 0) return;
    const noop = () => undefined;
    const source = await prepareSource(this.opts.root, spec.repositoryUrl, new AbortController().signal, noop, this.opts.gitCredentials);
    const plan = await this.plan(spec, source, noop);
    this.pool.noteEnvironment(spec.environmentId, plan.key);
    this.pool.want(plan.key, plan, size);
    this.pool.refill(plan.key);
  }

  /**
   * An environment's warm_pool changed, or (null) the environment was removed: the pool
   * keys its runs and pre-warming used take the new size now — past it, ready members are
   * removed at once, not at the key's next run. 0 means the daemon's --warm-pool.
   */
  resizeEnvironmentPool(environmentId: string, size: number | null): void {
    this.pool.resizeEnvironment(environmentId, size === null ? null : size || this.opts.warmPool || 0);
  }


  /**
   * Makes a pool member: the container of the plan with no run in it, started, its runner
   * answering its claim secret. Removed again when it does not come up.
   */
  private async makeMember(key: string, plan: CreatePlan, name: string, secret: string): Promise<Omit<PoolMember, "recipe">> {
    const { docker } = this.opts;
    const create = this.withCa(
      poolContainerSpec({ name, key, claimHash: claimSecretHash(secret), image: plan.image, instanceId: this.opts.instanceId, source: plan.source, limits: plan.limits, networkMode: plan.networkMode }),
    );
    try {
      const container = await docker.createContainer(create).catch((e: unknown) => Promise.reject(dockerError("create", e)));
      await container.start().catch((e: unknown) => Promise.reject(dockerError("start", e)));
      const endpoint = await this.pollRunner(`pool container ${name}`, name, new AbortController().signal, (runner, timeout) =>
        createRunnerClient(runner, secret).poolReady(timeout).then(() => undefined),
      );
      return { name, id: container.id, key, secret, endpoint };
    } catch (error) {
      await this.removeContainer(name).catch(() => undefined);
      throw error;
    }
  }

  private removeContainer(name: string): Promise<void> {
    return this.opts.docker
      .getContainer(name)
      .remove({ force: true, v: true })
      .catch((e: unknown) => (isNotFound(e) ? undefined : Promise.reject(dockerError("remove", e))));
  }

  /**
   * Starts a container of this daemon's; one in a network holder's namespace has its
   * holder started first (an engine restart stops both, and it cannot start without it).
   */
  private async startContainer(container: Docker.Container, info: ContainerInfo | null): Promise<void> {
    const started = (what: string) => (e: unknown) => ((e as DockerErrorLike).statusCode === 304 ? undefined : Promise.reject(dockerError(what, e)));
    const holder = holderOf(info?.HostConfig.NetworkMode);
    if (holder) {
      this.holderAddresses.delete(holder); // a holder started again may have another address
      await this.opts.docker.getContainer(holder).start().catch(started("start its network holder"));
    }
    await container.start().catch(started("start"));
  }

  /**
   * A ready network holder on the plan's network for a new sandbox, or none: there is none
   * ready, --warm-networks is 0, or the runtime is not runc (a gVisor sandbox keeps the
   * network stack of its own making). Asking teaches the holders the network.
   */
  private takeHolder(plan: CreatePlan): PoolMember | undefined {
    if (!this.opts.warmNetworks || plan.limits.runtime !== "runc") return undefined;
    const key = networkKey(plan.networkMode);
    this.holders.want(key, key);
    const holder = this.holders.take(key);
    if (holder) this.holderAddresses.set(holder.id, holder.endpoint);
    return holder;
  }

  /** Makes a network holder on `network`, started, with its address (as the member's endpoint). */
  private async makeHolder(key: string, network: string, name: string): Promise<Omit<PoolMember, "recipe">> {
    try {
      const container = await this.opts.docker
        .createContainer(holderSpec({ name, image: this.opts.image, instanceId: this.opts.instanceId, network }))
        .catch((e: unknown) => Promise.reject(dockerError("create network holder", e)));
      await container.start().catch((e: unknown) => Promise.reject(dockerError("start network holder", e)));
      const address = addressOf(await container.inspect());
      if (!address) throw new SandboxError(`network holder ${name} has no address on ${network}`, false);
      return { name, id: container.id, key, secret: "", endpoint: address };
    } catch (error) {
      await this.removeContainer(name).catch(() => undefined);
      throw error;
    }
  }

  private removeHolder(id: string): Promise<void> {
    this.holderAddresses.delete(id);
    return this.removeContainer(id);
  }

  /** The runner's address when the container runs and has an address (its network holder's, when it is in one). */
  private async endpointOf(info: ContainerInfo): Promise<string | undefined> {
    if (!info.State.Running) return undefined;
    const holder = holderOf(info.HostConfig.NetworkMode);
    const address = holder ? await this.holderAddress(holder) : addressOf(info);
    return address ? `http://${address}:${RUNNER_PORT}` : undefined;
  }

  /** A running holder's address (kept: it holds while the holder runs). */
  private async holderAddress(id: string): Promise<string | undefined> {
    const known = this.holderAddresses.get(id);
    if (known) return known;
    const info = await this.opts.docker
      .getContainer(id)
      .inspect()
      .catch((e: unknown) => (isNotFound(e) ? null : Promise.reject(dockerError("inspect network holder", e))));
    const address = info?.State.Running ? addressOf(info) : undefined;
    if (address) this.holderAddresses.set(id, address);
    return address;
  }

  private claimFile(containerId: string): string {
    return join(this.opts.root, "docker-claims", `${containerId}.json`);
  }

  private async writeClaim(containerId: string, record: ClaimRecord): Promise<void> {
    await mkdir(join(this.opts.root, "docker-claims"), { recursive: true, mode: 0o700 });
    await writeFile(this.claimFile(containerId), JSON.stringify(record), { mode: 0o600 });
  }

  private async readClaim(containerId: string): Promise<ClaimRecord | null> {
    try {
      return JSON.parse(await readFile(this.claimFile(containerId), "utf8")) as ClaimRecord;
    } catch {
      return null;
    }
  }

  private dropClaim(containerId: string): Promise<void> {
    return rm(this.claimFile(containerId), { force: true });
  }

  private keyFor(spec: Pick<SandboxSpec, "repositoryUrl" | "setupHash" | "environmentId">, baseImageId: string): string {
    return snapshotKey({
      baseImageId,
      paddockVersion: PADDOCK_VERSION,
      repositoryUrl: spec.repositoryUrl,
      setupHash: spec.setupHash ?? "",
      environmentId: spec.environmentId ?? "",
      caHash: this.caHash,
    });
  }

  private imageExists(ref: string): Promise<boolean> {
    return this.opts.docker.getImage(ref).inspect().then(
      () => true,
      (e: unknown) => (isNotFound(e) ? false : Promise.reject(dockerError("inspect image", e))),
    );
  }

  /**
   * Waits for the held runner to finish setup; when setup succeeded, snapshots the sandbox
   * (unless it came from one, or the key has one by now). The daemon continues it after.
   */
  async afterSetup(spec: SandboxSpec, signal: AbortSignal, progress: (line: string) => void): Promise<void> {
    for (;;) {
      signal.throwIfAborted();
      const status = await this.inspect(spec.name);
      if (status.state !== "running") return; // died: supervision says so
      const health = await createRunnerClient(status.endpoint!, spec.token)
        .health(AbortSignal.any([signal, AbortSignal.timeout(5000)]))
        .catch(() => null);
      if (health?.agent === "ready") break;
      // The agent runs already (continued before a restart), or setup failed.
      if ((health?.agent === "running" && health.stage !== "setup") || health?.agent === "exited") return;
      await sleep(250, undefined, { signal }); // setup takes seconds to minutes: a poll costs nothing here
    }
    const info = await this.opts.docker.getContainer(spec.name).inspect().catch((e: unknown) => Promise.reject(dockerError("inspect", e)));
    if (info.Config.Labels?.[LABEL_SNAPSHOT]) return;
    // The container's own image id: the base it was made from, even if the tag moved since.
    await this.takeSnapshot(spec, this.keyFor(spec, info.Image), info.Image, sourceOf(info), progress, signal);
  }

  /**
   * Commits the sandbox after clone and setup as an image, labelled with this daemon and
   * its row, so the next run of the key starts from it and skips setup. A failure is
   * recorded, not fatal; a crash mid-commit is repaired at the next start by the labels.
   */
  private async takeSnapshot(
    spec: SandboxSpec,
    key: string,
    baseImageId: string,
    source: string | undefined,
    progress: (line: string) => void,
    signal: AbortSignal,
  ): Promise<void> {
    await takeSnapshotOnce({ store: this.opts.snapshots, provider: this.name, key, spec, source, baseImageId, progress, signal }, async (rowId, commit) => {
      const tag = `${key}-${rowId.slice(5)}`;
      await this.opts.docker.getContainer(spec.name).commit({
        repo: SNAPSHOT_REPO,
        tag,
        pause: true,
        comment: `paddock snapshot of ${spec.repositoryUrl} at ${commit} after setup`,
        // A pool-born container's key is not the image's: its members and runs set their own.
        // Nothing of the run the snapshot is taken from stays in the image's metadata (its
        // prompt, id, command), where `docker image inspect` would show it to any later run's
        // operator: every container made from it sets all of these anew.
        changes: [`LABEL ${LABEL_SNAPSHOT}=${rowId} ${LABEL_INSTANCE}=${this.opts.instanceId} ${LABEL_POOL}=`, `ENV ${RUN_VARIABLES.map((k) => `${k}=`).join(" ")}`],
        abortSignal: signal,
      });
      const image = await this.opts.docker.getImage(`${SNAPSHOT_REPO}:${tag}`).inspect();
      this.settleIndex(tag, rowId, commit);
      return { image: `${SNAPSHOT_REPO}:${tag}`, sizeBytes: image.Size };
    });
  }

  /**
   * Gives a new snapshot an index that matches its files, in the background (the run that
   * took it goes on meanwhile). Committed files get new inodes and ctimes, so the index
   * taken along describes none of them as they are now: every sandbox from the image would
   * hash the whole workspace again at its first git command (~0.2 s for 16 MB). Files of an
   * image's layers keep their inode and ctime in every container of it, so a container of
   * the image refreshes the index once and is committed under the same tag, its only change
   * the index (back in the agent's hands). Git's own checks stay as they are: the index is
   * newer than every file it describes. Best effort: on failure the tag keeps its first image.
   */
  private settleIndex(tag: string, rowId: string, commit: string): void {
    const { docker } = this.opts;
    const ref = `${SNAPSHOT_REPO}:${tag}`;
    const git = ["git", ...HARDENED_GIT_CONFIG, "-C", WORKSPACE].map((a) => `'${a}'`).join(" ");
    const name = `paddock-settle-${randomBytes(6).toString("hex")}`;
    const settled = `${WORKSPACE}/.git/${SETTLED_FILE}`;
    const run = (async () => {
      const image = await docker.getImage(ref).inspect();
      const labels = Object.fromEntries(Object.entries(image.Config.Labels ?? {}).filter(([k]) => k.startsWith("paddock.") && k !== LABEL_SETTLE));
      if (labels[LABEL_SNAPSHOT] !== rowId) return; // not the image this snapshot made (the tag moved)
      const c = await docker.createContainer({
        name,
        Image: ref,
        // Not a sandbox (the reaper and listings find those by the paddock labels the image
        // carries: blanked here, put back on the image below), but marked as this daemon's
        // settler, removed at its next start if a crash leaves it.
        Labels: { ...Object.fromEntries(Object.keys(labels).map((k) => [k, ""])), [LABEL_SETTLE]: this.opts.instanceId },
        // Where HEAD, the index and the tracked files all match HEAD's commit, that commit is
        // recorded: a sandbox from the image then starts on it without git while the source
        // has not moved (checkout's settledSnapshot).
        Entrypoint: [
          "sh",
          "-c",
          `rm -f ${settled}; ${git} update-index -q --refresh; chown --reference=${WORKSPACE}/.git ${WORKSPACE}/.git/index; ` +
            `${git} diff-index --quiet HEAD -- && ${git} rev-parse --verify -q 'HEAD^{commit}' > ${settled}.tmp && mv ${settled}.tmp ${settled}`,
        ],
        Cmd: [],
        HostConfig: { NetworkMode: "none" },
      });
      try {
        await c.start();
        await c.wait();
        const settled = (await c.commit({
          comment: `paddock snapshot at ${commit} after setup, its index refreshed`,
          // The container's entry point was the refresh's: the image's own comes back.
          changes: [
            `ENTRYPOINT ${JSON.stringify(image.Config.Entrypoint ?? [])}`,
            `CMD ${JSON.stringify(image.Config.Cmd ?? [])}`,
            `LABEL ${[...Object.entries(labels), [LABEL_SETTLE, ""]].map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ")}`,
          ],
        })) as { Id: string };
        // Tagged only while the snapshot is still the tag's (not removed or replaced meanwhile).
        const row = this.opts.snapshots.get(rowId);
        const current = await docker.getImage(ref).inspect().then((i) => i.Id, () => "");
        if ((row?.status === "complete" || row?.status === "in_progress") && current === image.Id) {
          await docker.getImage(settled.Id).tag({ repo: SNAPSHOT_REPO, tag });
        } else {
          await docker.getImage(settled.Id).remove().catch(() => undefined);
        }
      } finally {
        await c.remove({ force: true, v: true }).catch(() => undefined);
      }
    })().catch((error: unknown) => this.opts.info?.(`snapshot ${ref}: its index was not refreshed (sandboxes from it refresh their own): ${(error as Error).message}`));
    this.settling.add(run);
    void run.finally(() => this.settling.delete(run));
  }

  /** Resolves once no snapshot's index is being settled (tests and benches wait on it). */
  async snapshotsSettled(): Promise<void> {
    while (this.settling.size > 0) await Promise.all(this.settling);
  }

  /**
   * Rows a crash left in progress (this daemon holds the data dir, so none is being taken):
   * finished when the labelled image exists, else removed.
   */
  private async recoverSnapshots(): Promise<void> {
    const pending = this.opts.snapshots.list(this.name).filter((s) => s.status === "in_progress");
    if (pending.length === 0) return;
    const images = await this.snapshotImages();
    for (const s of pending) {
      const image = images.find((i) => i.Labels?.[LABEL_SNAPSHOT] === s.id);
      const tag = image?.RepoTags?.find((t) => t.startsWith(`${SNAPSHOT_REPO}:`));
      if (image && tag) this.opts.snapshots.complete(s.id, tag, image.Size);
      else this.opts.snapshots.remove(s.id);
    }
  }

  /** This daemon's snapshot images, found by their labels. */
  private snapshotImages(): Promise<Docker.ImageInfo[]> {
    return this.opts.docker
      .listImages({ filters: { label: [`${LABEL_INSTANCE}=${this.opts.instanceId}`, LABEL_SNAPSHOT] } })
      .catch((e: unknown) => Promise.reject(dockerError("list images", e)));
  }

  /**
   * Removes snapshots past their age or the size budget, rows whose image is gone, and —
   * from the engine's labels — images of this daemon that no complete row owns.
   */
  async collectGarbage(): Promise<number> {
    let kept = 0;
    let removed = 0;
    const now = Date.now();
    const images = await this.snapshotImages();
    const tags = new Set(images.flatMap((i) => i.RepoTags ?? []));
    for (const s of this.opts.snapshots.list(this.name)) {
      const stale = s.status === "in_progress" && now - s.createdAt > 3_600_000;
      const old = now - s.lastUsedAt > this.opts.snapshotMaxAgeMs;
      const over = s.status === "complete" && kept + s.sizeBytes > this.opts.snapshotMaxBytes;
      const gone = s.status === "complete" && !tags.has(s.externalId) && !(await this.imageExists(s.externalId));
      if (s.status === "complete" && !old && !over && !gone) {
        kept += s.sizeBytes;
        continue;
      }
      if (s.status === "in_progress" && !stale) continue;
      if (s.externalId && !(await this.removeImage(s.externalId))) continue; // in use by a container: next time
      this.opts.snapshots.remove(s.id);
      removed++;
    }
    for (const image of await this.snapshotImages()) {
      const row = this.opts.snapshots.get(image.Labels![LABEL_SNAPSHOT]!);
      if (row && (row.status === "complete" || row.status === "in_progress")) continue;
      if (await this.removeImage(image.RepoTags?.find((t) => t.startsWith(`${SNAPSHOT_REPO}:`)) ?? image.Id)) removed++;
    }
    return removed;
  }

  /** Whether the image is gone now; false while a container still uses it. */
  private removeImage(ref: string): Promise<boolean> {
    return this.opts.docker.getImage(ref).remove().then(
      () => true,
      (e: unknown) => isNotFound(e),
    );
  }

  private async waitForRunner(spec: SandboxSpec, signal: AbortSignal): Promise<SandboxStatus> {
    return { state: "running", endpoint: await this.waitForEndpoint(spec.name, spec.runId, spec.token, signal) };
  }

  /** The daemon's limits with the run's overrides; a runtime the engine lacks is refused. */
  private async limitsFor(spec: Pick<SandboxSpec, "limits">): Promise<ContainerLimits> {
    const defined = Object.fromEntries(Object.entries(spec.limits).filter(([, v]) => v !== undefined && v !== ""));
    const limits: ContainerLimits = { ...this.opts.limits, ...defined };
    if (limits.runtime !== "runc") {
      const info = (await this.opts.docker.info().catch((e: unknown) => Promise.reject(dockerError("info", e)))) as { Runtimes?: Record<string, unknown> };
      if (!info.Runtimes?.[limits.runtime]) {
        throw new SandboxError(`runtime ${limits.runtime} is not installed in the Docker engine (it has: ${Object.keys(info.Runtimes ?? {}).join(", ")})`, false);
      }
    }
    return limits;
  }

  /** The container's last output lines, for error messages (the runner says why it stopped). */
  private async tail(name: string): Promise<string> {
    try {
      const buf = (await this.opts.docker.getContainer(name).logs({ stdout: true, stderr: true, tail: 5 })) as unknown as Buffer;
      const text = demux(buf).trim().split("\n").filter(Boolean).slice(-3).join(" | ");
      return text ? `: ${text}` : "";
    } catch {
      return "";
    }
  }

  async inspect(name: string): Promise<SandboxStatus> {
    let info;
    try {
      info = await this.opts.docker.getContainer(name).inspect();
    } catch (e) {
      if (isNotFound(e)) return { state: "missing" };
      throw dockerError("inspect", e);
    }
    const endpoint = await this.endpointOf(info);
    return endpoint ? { state: "running", endpoint } : { state: "stopped" };
  }

  /**
   * Takes the agent's work out and removes the container. The work leaves only as a bundle
   * the runner makes inside the sandbox, in the same capture as the handoff state `keep`
   * asks for; a container that stopped is started again for that (its entrypoint is our
   * runner, which never runs the agent a second time). Once the bytes are out (staged in
   * the data dir) the container is removed while they are imported: a daemon stopped
   * meanwhile imports them at the next cleanup, the container being gone by then.
   */
  async destroy(name: string, signal: AbortSignal, keep?: CleanupKeep): Promise<CleanupResult> {
    const container = this.opts.docker.getContainer(name);
    let info;
    try {
      info = await container.inspect();
    } catch (e) {
      if (isNotFound(e)) return await this.finishStaged(name, signal);
      throw dockerError("inspect", e);
    }
    const env = Object.fromEntries((info.Config.Env ?? []).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
    // A pool member says nothing of its run in labels or environment (Docker cannot change
    // them after create): the daemon's claim record does, and an unclaimed one has no run.
    const pooled = info.Config.Labels?.[LABEL_POOL] !== undefined && info.Config.Labels[LABEL_RUN] === "";
    const claim = pooled ? await this.readClaim(info.Id) : null;
    const runId = pooled ? claim?.runId : info.Config.Labels?.[LABEL_RUN];
    const resultBranch = pooled ? claim?.resultBranch : env.PADDOCK_RESULT_BRANCH;
    const source = sourceOf(info);
    let result: CleanupResult = {};
    // Work an earlier cleanup staged is the agent's last (the agent was stopped for it, and
    // a runner never runs it again): it is not taken a second time, and a container that
    // lost its network holder meanwhile (removed beside it, below) needs none.
    let staged = existsSync(join(this.stageDir(name), "work.json"));
    // A container that never started has no work (the clone happens at its start).
    if (runId && source && resultBranch && info.State.Status !== "created" && !staged) {
      try {
        if (!info.State.Running) await this.startContainer(container, info);
        const token = await this.opts.tokenFor(runId);
        // The runner the daemon just drained answers for the run (its token says so).
        const endpoint = keep?.endpoint && info.State.Running ? keep.endpoint : await this.waitForEndpoint(name, runId, token, signal);
        const runner = createRunnerClient(endpoint, token);
        const timeout = AbortSignal.any([signal, AbortSignal.timeout(this.opts.graceMs + 60_000)]);
        const collected = await this.stageWork(name, runner, { source, resultBranch, handoff: keep?.handoff, signal, timeout });
        if (collected) result = collected;
        else staged = true;
      } catch (error) {
        if (signal.aborted) throw error;
        result.notes = [`the agent's work could not be taken out: ${(error as Error).message}`];
      }
    }
    // The work is out (or cannot be had): nothing in the container is worth a grace period,
    // so it goes as `docker rm -f` would, with no stop and no runner shutdown to wait for.
    // Its anonymous volumes (the runner's state) go once it is gone, beside the import:
    // recorded first, so a daemon stopped in between removes them at the next cleanup.
    const volumes = (info.Mounts ?? []).flatMap((m) => (m.Type === "volume" && m.Name && /^[0-9a-f]{64}$/.test(m.Name) ? [m.Name] : []));
    if (volumes.length > 0) await this.stage(name, "volumes.json", volumes);
    await keep?.drained;
    const removing = container.remove({ force: true }).catch((e: unknown) => (isNotFound(e) ? undefined : Promise.reject(dockerError("remove", e))));
    // Its network holder goes beside it: the work is out, nothing needs the network now (a
    // crash in between leaves the work staged, or a holder nothing joins, which is reaped).
    const holder = holderOf(info.HostConfig.NetworkMode);
    const [imported] = await Promise.all([
      staged ? this.importStaged(name, signal) : null,
      removing.then(() => this.removeStagedVolumes(name)),
      holder && this.removeHolder(holder),
    ]);
    await rm(this.stageDir(name), { recursive: true, force: true });
    if (claim) await this.dropClaim(info.Id);
    return imported ?? result;
  }

  /** Where a container's work waits between leaving it and reaching the source repository. */
  private stageDir(name: string): string {
    return join(this.opts.root, "cleanup", name);
  }

  /**
   * POST /collect: the work's bundle (and the handoff's, to `handoff`) out of the runner,
   * the work staged with what its import needs. Resolves null once staged; a runner from
   * before /collect has its handoff state and work taken the old way, imported at once.
   */
  private async stageWork(
    name: string,
    runner: RunnerClient,
    o: { source: string; resultBranch: string; handoff?: HandoffSink; signal: AbortSignal; timeout: AbortSignal },
  ): Promise<CleanupResult | null> {
    const dir = this.stageDir(name);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const bundle = join(dir, "work.bundle");
    await rm(bundle, { force: true });
    let manifest: CollectManifest;
    try {
      manifest = await runner.collect({ handoff: !!o.handoff, workFile: bundle, handoffFile: o.handoff?.file ?? join(dir, "handoff.bundle"), maxHandoffBytes: o.handoff?.maxBytes ?? 0 }, o.timeout);
    } catch (error) {
      if (!collectNotServed(error)) throw error;
      await o.handoff?.takeFrom(runner);
      return collectWork(runner, { source: o.source, resultBranch: o.resultBranch, scratch: join(dir, "collect"), signal: o.signal, timeout: o.timeout });
    }
    if (o.handoff && manifest.handoff) await o.handoff.keep(manifest.handoff, manifest.handoff.bytes);
    else o.handoff?.failed(new SandboxError(manifest.handoffError || "the runner sent no handoff state", false));
    const staged: StagedWork = { source: o.source, resultBranch: o.resultBranch, head: String(manifest.work.head), agentBranch: String(manifest.work.branch), bundled: manifest.work.bytes > 0 };
    await this.stage(name, "work.json", staged);
    return null;
  }

  /** Writes a record of the container's stage (atomically). */
  private async stage(name: string, file: string, value: unknown): Promise<void> {
    const dir = this.stageDir(name);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(join(dir, `${file}.tmp`), JSON.stringify(value), { mode: 0o600 });
    await rename(join(dir, `${file}.tmp`), join(dir, file));
  }

  /** For a container already gone: what its stage still holds (work to import, volumes to remove) is done, then forgotten. */
  private async finishStaged(name: string, signal: AbortSignal): Promise<CleanupResult> {
    const [imported] = await Promise.all([this.importStaged(name, signal), this.removeStagedVolumes(name)]);
    await rm(this.stageDir(name), { recursive: true, force: true });
    return imported ?? {};
  }

  /** Removes the volumes recorded for a container that is gone. */
  private async removeStagedVolumes(name: string): Promise<void> {
    const volumes = await readFile(join(this.stageDir(name), "volumes.json"), "utf8").then((t) => JSON.parse(t) as string[], () => [] as string[]);
    for (const v of volumes) {
      await this.opts.docker.getVolume(v).remove().catch((e: unknown) => (isNotFound(e) ? undefined : Promise.reject(dockerError("remove volume", e))));
    }
    await rm(join(this.stageDir(name), "volumes.json"), { force: true });
  }

  /**
   * Imports the work staged for `name` into its source repository (checked as every
   * bundle from a sandbox is) and forgets it; null when none is staged. Kept for the next
   * try only when the daemon is stopping.
   */
  private async importStaged(name: string, signal: AbortSignal): Promise<CleanupResult | null> {
    const dir = this.stageDir(name);
    let staged: StagedWork;
    try {
      staged = JSON.parse(await readFile(join(dir, "work.json"), "utf8")) as StagedWork;
    } catch {
      return null;
    }
    try {
      const bundle = staged.bundled ? join(dir, "work.bundle") : null;
      const result = await importWork({ source: staged.source, resultBranch: staged.resultBranch, bundle, head: staged.head, agentBranch: staged.agentBranch, signal });
      await rm(join(dir, "work.json"), { force: true });
      return result;
    } catch (error) {
      if (signal.aborted) throw error;
      await rm(join(dir, "work.json"), { force: true });
      return { notes: [`the agent's work could not be taken out: ${(error as Error).message}`] };
    }
  }

  async revive(name: string, runId: string, signal: AbortSignal): Promise<string | null> {
    const container = this.opts.docker.getContainer(name);
    const info = await container.inspect().catch((e: unknown) => (isNotFound(e) ? null : Promise.reject(dockerError("inspect", e))));
    if (!info || info.State.Status === "created") return null;
    if (!info.State.Running) await this.startContainer(container, info);
    return this.waitForEndpoint(name, runId, await this.opts.tokenFor(runId), signal);
  }

  /** The runner's endpoint once it answers for the run; for a restarted container, too. */
  private waitForEndpoint(name: string, runId: string, token: string, signal: AbortSignal): Promise<string> {
    return this.pollRunner(`container ${name}`, name, signal, async (endpoint, timeout) => {
      const health = await createRunnerClient(endpoint, token).health(timeout);
      if (health.runId !== runId) throw new Error(`runner answered for ${health.runId}`);
    });
  }

  /**
   * The container's runner endpoint once `answers` resolves there (it throws why not yet),
   * polled until the runner start timeout; a container that stops first fails at once.
   */
  private async pollRunner(what: string, name: string, signal: AbortSignal, answers: (endpoint: string, timeout: AbortSignal) => Promise<void>): Promise<string> {
    const until = Date.now() + this.opts.runnerStartTimeoutMs;
    let last = "not answering yet";
    // The address holds while the container runs: the engine is asked again only every
    // ~100 ms (has it stopped?), and the runner every 5 ms (start-up latency is what this
    // loop adds; a refused connection costs next to nothing).
    let endpoint = "";
    let inspectedAt = 0;
    while (Date.now() < until) {
      signal.throwIfAborted();
      if (!endpoint || Date.now() - inspectedAt >= 100) {
        const status = await this.inspect(name);
        if (status.state !== "running") throw new SandboxError(`${what} stopped before its runner answered${await this.tail(name)}`, false);
        endpoint = status.endpoint!;
        inspectedAt = Date.now();
      }
      try {
        await answers(endpoint, AbortSignal.any([signal, AbortSignal.timeout(2000)]));
        return endpoint;
      } catch (error) {
        last = (error as Error).message;
      }
      await sleep(5, undefined, { signal });
    }
    throw new SandboxError(`runner in ${name} did not answer within ${this.opts.runnerStartTimeoutMs} ms (${last})`, false);
  }

  async list(): Promise<string[]> {
    const containers = await this.opts.docker
      .listContainers({ all: true, filters: { label: [`${LABEL_INSTANCE}=${this.opts.instanceId}`] } })
      .catch((e: unknown) => Promise.reject(dockerError("list", e)));
    // The pools' own members are not orphans; members of an earlier daemon process are, and
    // so is a network holder that no container joins.
    const serving = servingHolders(containers);
    return containers
      .filter((c) => !serving.has(c.Id))
      .map((c) => (c.Names[0] ?? "").replace(/^\//, ""))
      .filter((name) => name && !this.pool.owns(name) && !this.holders.owns(name));
  }
}

function notIsolated(reason: string): string {
  return `host isolation is not enforced: unrestricted docker sandboxes can reach the host, private networks and other sandboxes (${reason})`;
}

type ContainerInfo = Awaited<ReturnType<Docker.Container["inspect"]>>;


/** The host repository the container's source mount points at: where the work goes back. */
function sourceOf(info: ContainerInfo): string | undefined {
  const bind = info.HostConfig.Binds?.find((b) => b.endsWith(`:${SOURCE_MOUNT}:ro`));
  return bind?.slice(0, bind.length - `:${SOURCE_MOUNT}:ro`.length);
}

/** Docker multiplexes a non-TTY container's stdout and stderr into 8-byte-headed frames. */
function demux(buf: Buffer): string {
  let out = "";
  for (let i = 0; i + 8 <= buf.length; ) {
    const len = buf.readUInt32BE(i + 4);
    out += buf.subarray(i + 8, i + 8 + len).toString("utf8");
    i += 8 + len;
  }
  return out;
}
