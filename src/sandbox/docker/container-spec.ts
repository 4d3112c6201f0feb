import type { ContainerCreateOptions } from "dockerode";
import { RUN_VARIABLES, runnerEnvironment, type RunnerEnv } from "../../agent/runner-env.js";
import { runnerEnvOfRun, type SandboxSpec } from "../provider.js";

export const RUNNER_PORT = 47821;
export const SOURCE_MOUNT = "/paddock/source";
export const WORKSPACE = "/workspace";
export const STATE_DIR = "/paddock/state";
/** The agent's user in the sandbox image; the runner is root and the agent is not. */
export const AGENT_UID = 1000;
export const AGENT_HOME = "/home/agent";

export const LABEL_INSTANCE = "paddock.instance";
export const LABEL_RUN = "paddock.run";
export const LABEL_SANDBOX = "paddock.sandbox";
/** On a warm pool's members: the pool key (a claimed member keeps it, under its run's name). */
export const LABEL_POOL = "paddock.pool";

export interface ContainerLimits {
  /** CPUs, fractional allowed. */
  cpus: number;
  memoryBytes: number;
  pids: number;
  /** OCI runtime: "runc", or "runsc" for gVisor. */
  runtime: string;
}

/** Where everything is in the sandbox image: the same for a run's container and a pool member. */
function placement(): Pick<RunnerEnv, "PADDOCK_RUNNER_HOST" | "PADDOCK_RUNNER_PORT" | "PADDOCK_WORKDIR" | "PADDOCK_STATE_DIR" | "PADDOCK_SOURCE" | "PADDOCK_AGENT_UID" | "PADDOCK_AGENT_GID" | "PADDOCK_AGENT_HOME"> {
  return {
    PADDOCK_RUNNER_HOST: "0.0.0.0",
    PADDOCK_RUNNER_PORT: RUNNER_PORT,
    PADDOCK_WORKDIR: WORKSPACE,
    PADDOCK_STATE_DIR: STATE_DIR,
    PADDOCK_SOURCE: SOURCE_MOUNT,
    PADDOCK_AGENT_UID: AGENT_UID,
    PADDOCK_AGENT_GID: AGENT_UID,
    PADDOCK_AGENT_HOME: AGENT_HOME,
  };
}

/**
 * The container for one sandbox, as a pure function of its inputs: the runner as the
 * entrypoint, the host's copy of the repository read-only, labels for the reaper, limits.
 */
export function containerSpec(
  spec: SandboxSpec,
  o: { image: string; instanceId: string; source: string; limits: ContainerLimits; networkMode?: string },
): ContainerCreateOptions {
  return {
    name: spec.name,
    Image: o.image,
    Labels: { [LABEL_INSTANCE]: o.instanceId, [LABEL_RUN]: spec.runId, [LABEL_SANDBOX]: spec.name },
    // No token here: the runner needs only the public key, and the daemon mints tokens itself.
    Env: Object.entries(runnerEnvironment({ ...runnerEnvOfRun(spec), ...placement() })).map(([k, v]) => `${k}=${v}`),
    ...hostPart(o),
  };
}

/**
 * A warm pool's member: the same container as a run's of its key (image, source, network,
 * limits), with nothing of any run — the runner waits for the claim whose secret hashes to
 * `claimHash`. Labelled with its key, so the reaper and `paddock cleanup` know it.
 */
export function poolContainerSpec(
  o: { name: string; key: string; claimHash: string; image: string; instanceId: string; source: string; limits: ContainerLimits; networkMode?: string },
): ContainerCreateOptions {
  return {
    name: o.name,
    Image: o.image,
    // Blank run labels: a snapshot's image still carries those of the run it was taken from.
    Labels: { [LABEL_INSTANCE]: o.instanceId, [LABEL_POOL]: o.key, [LABEL_RUN]: "", [LABEL_SANDBOX]: "" },
    // The run's variables blank: a snapshot's image still carries those of the run it was taken from.
    Env: [...RUN_VARIABLES.map((k) => `${k}=`), ...Object.entries(runnerEnvironment({ ...placement(), PADDOCK_POOL_CLAIM: o.claimHash } as RunnerEnv)).map(([k, v]) => `${k}=${v}`)],
    ...hostPart(o),
  };
}

/** What every sandbox container is made with besides its image, labels and environment: mounts, network, limits, hardening. */
export function hostPart(o: { source: string; limits: ContainerLimits; networkMode?: string }): Pick<ContainerCreateOptions, "WorkingDir" | "ExposedPorts" | "HostConfig"> {
  return {
    WorkingDir: WORKSPACE,
    // A sandbox in a network holder's namespace (`container:<id>`) may not expose ports of
    // its own (the engine refuses it): the runner listens on the holder's address.
    ...(o.networkMode?.startsWith("container:") ? {} : { ExposedPorts: { [`${RUNNER_PORT}/tcp`]: {} } }),
    HostConfig: {
      Binds: [`${o.source}:${SOURCE_MOUNT}:ro`],
      // A restricted sandbox lives on the internal egress network: out only via the proxy.
      ...(o.networkMode ? { NetworkMode: o.networkMode } : {}),
      NanoCpus: Math.round(o.limits.cpus * 1e9),
      Memory: o.limits.memoryBytes,
      PidsLimit: o.limits.pids,
      Runtime: o.limits.runtime,
      // The sandbox is ours to remove: never restarted behind our back, never auto-removed
      // before cleanup has taken the agent's work out of it.
      RestartPolicy: { Name: "no" },
      AutoRemove: false,
      // An init as PID 1 reaps what the agent orphans; the runner is not built to.
      Init: true,
      SecurityOpt: ["no-new-privileges"],
      CapDrop: ["NET_RAW", "SYS_ADMIN", "MKNOD", "SYS_CHROOT", "AUDIT_WRITE"],
    },
  };
}
