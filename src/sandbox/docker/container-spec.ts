import type { ContainerCreateOptions } from "dockerode";
import { runnerEnvironment } from "../../agent/runner-env.js";
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

export interface ContainerLimits {
  /** CPUs, fractional allowed. */
  cpus: number;
  memoryBytes: number;
  pids: number;
  /** OCI runtime: "runc", or "runsc" for gVisor. */
  runtime: string;
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
    Env: Object.entries(
      runnerEnvironment({
        ...runnerEnvOfRun(spec),
        PADDOCK_RUNNER_HOST: "0.0.0.0",
        PADDOCK_RUNNER_PORT: RUNNER_PORT,
        PADDOCK_WORKDIR: WORKSPACE,
        PADDOCK_STATE_DIR: STATE_DIR,
        PADDOCK_SOURCE: SOURCE_MOUNT,
        PADDOCK_AGENT_UID: AGENT_UID,
        PADDOCK_AGENT_GID: AGENT_UID,
        PADDOCK_AGENT_HOME: AGENT_HOME,
      }),
    ).map(([k, v]) => `${k}=${v}`),
    WorkingDir: WORKSPACE,
    ExposedPorts: { [`${RUNNER_PORT}/tcp`]: {} },
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
