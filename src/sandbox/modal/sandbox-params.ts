import type { SandboxCreateParams } from "modal";
import { runnerEnvironment, type RunnerEnv } from "../../agent/runner-env.js";
import { AGENT_HOME, AGENT_UID, LABEL_INSTANCE, LABEL_POOL, LABEL_RUN, LABEL_SANDBOX, RUNNER_PORT, WORKSPACE } from "../docker/container-spec.js";
import { runnerEnvOfRun, type SandboxSpec } from "../provider.js";
import type { ModalNetwork } from "./modal-network.js";

/** On snapshot-started sandboxes: the sandbox_snapshots row they came from. */
export const TAG_SNAPSHOT = "paddock.snapshot";
/** On warm pool members: the name the member was made with (a claimed one serves a run under another name). */
export const TAG_MEMBER = "paddock.member";
/** The runner's state lives per run: a snapshot carries the workspace, never a run's records into the next. */
export const STATE_ROOT = "/paddock/state";
/** Where paddock brings its own binary into a plain registry image (--modal-install-paddock). */
export const INSTALLED_PADDOCK = "/paddock/bin/paddock";
/** Modal's longest sandbox lifetime. */
export const MAX_TIMEOUT_MS = 24 * 3_600_000;
/** Time past the run's deadline the sandbox lives on, for cleanup to take the work out. */
export const CLEANUP_MARGIN_MS = 15 * 60_000;

/** Where things are in a modal sandbox; the repository arrives through POST /import. */
function placement(stateName: string): Pick<RunnerEnv, "PADDOCK_RUNNER_HOST" | "PADDOCK_RUNNER_PORT" | "PADDOCK_WORKDIR" | "PADDOCK_STATE_DIR" | "PADDOCK_IMPORT" | "PADDOCK_OTHER_STATES" | "PADDOCK_AGENT_UID" | "PADDOCK_AGENT_GID" | "PADDOCK_AGENT_HOME"> {
  return {
    PADDOCK_RUNNER_HOST: "0.0.0.0",
    PADDOCK_RUNNER_PORT: RUNNER_PORT,
    PADDOCK_WORKDIR: WORKSPACE,
    PADDOCK_STATE_DIR: `${STATE_ROOT}/${stateName}`,
    PADDOCK_IMPORT: "1",
    // A sandbox from a snapshot carries the state of the run it was taken from: dropped at start.
    PADDOCK_OTHER_STATES: "drop",
    PADDOCK_AGENT_UID: AGENT_UID,
    PADDOCK_AGENT_GID: AGENT_UID,
    PADDOCK_AGENT_HOME: AGENT_HOME,
  };
}

/**
 * The Modal sandbox of one run, as a pure function of its inputs: the runner as the
 * command, its environment (no token: the runner needs only the public key), tags for the
 * reaper, the lifetime (deadline + grace + cleanup margin, whole seconds, at most 24 h),
 * limits, the runner's encrypted port, and the stage's network policy.
 */
export function sandboxParams(
  spec: SandboxSpec,
  o: { instanceId: string; graceMs: number; cpus: number; memoryBytes: number; network: ModalNetwork; snapshotId: string; exitSnapshots: boolean; now: number; installed?: boolean },
): SandboxCreateParams {
  const deadline = spec.deadlineAt ?? o.now + 3_600_000;
  const lifetime = Math.min(MAX_TIMEOUT_MS, Math.max(60_000, deadline - o.now + o.graceMs + CLEANUP_MARGIN_MS));
  return {
    name: spec.name,
    command: [o.installed ? INSTALLED_PADDOCK : "paddock", "agent"],
    tags: { [LABEL_INSTANCE]: o.instanceId, [LABEL_RUN]: spec.runId, [LABEL_SANDBOX]: spec.name, ...(o.snapshotId ? { [TAG_SNAPSHOT]: o.snapshotId } : {}) },
    timeoutMs: Math.ceil(lifetime / 1000) * 1000, // the SDK takes whole seconds only
    cpu: spec.limits.cpus ?? o.cpus,
    memoryMiB: Math.ceil((spec.limits.memoryBytes ?? o.memoryBytes) / 1024 ** 2),
    encryptedPorts: [RUNNER_PORT],
    env: runnerEnvironment({ ...runnerEnvOfRun(spec), ...placement(spec.runId), PADDOCK_GRACE_MS: o.graceMs }),
    ...(o.network.allowedDomains ? { outboundDomainAllowlist: o.network.allowedDomains, outboundCidrAllowlist: [] } : {}),
    ...(o.exitSnapshots ? { experimentalOptions: { enable_exit_snapshot: true } } : {}),
  };
}

/**
 * A warm pool's member: a sandbox like a run's of its key (image, limits, the stage's
 * network policy) with nothing of any run — no run variables, blank run and sandbox tags —
 * its runner waiting for the claim whose secret hashes to `claimHash`. It lives Modal's
 * longest: its run's deadline is not known yet (a member too old for a run is not used).
 */
export function memberParams(o: {
  name: string;
  key: string;
  claimHash: string;
  instanceId: string;
  graceMs: number;
  cpus: number;
  memoryMiB: number;
  network: ModalNetwork;
  exitSnapshots: boolean;
  installed?: boolean;
}): SandboxCreateParams {
  return {
    name: o.name,
    command: [o.installed ? INSTALLED_PADDOCK : "paddock", "agent"],
    tags: { [LABEL_INSTANCE]: o.instanceId, [LABEL_POOL]: o.key, [TAG_MEMBER]: o.name, [LABEL_RUN]: "", [LABEL_SANDBOX]: "" },
    timeoutMs: MAX_TIMEOUT_MS,
    cpu: o.cpus,
    memoryMiB: o.memoryMiB,
    encryptedPorts: [RUNNER_PORT],
    env: runnerEnvironment({ ...placement(o.name), PADDOCK_GRACE_MS: o.graceMs, PADDOCK_POOL_CLAIM: o.claimHash } as RunnerEnv),
    ...(o.network.allowedDomains ? { outboundDomainAllowlist: o.network.allowedDomains, outboundCidrAllowlist: [] } : {}),
    ...(o.exitSnapshots ? { experimentalOptions: { enable_exit_snapshot: true } } : {}),
  };
}

/**
 * A sandbox made from a dead one's exit snapshot, only to take its work out: its runner
 * finds the agent's records without an exit and never starts anything; no outbound network.
 */
export function rescueParams(name: string, runId: string, resultBranch: string, instanceId: string, publicKeyPem: string, installed = false, stateName = runId): SandboxCreateParams {
  return {
    name,
    command: [installed ? INSTALLED_PADDOCK : "paddock", "agent"],
    tags: { [LABEL_INSTANCE]: instanceId, [LABEL_RUN]: runId, [LABEL_SANDBOX]: name },
    timeoutMs: 30 * 60_000,
    encryptedPorts: [RUNNER_PORT],
    outboundDomainAllowlist: [],
    outboundCidrAllowlist: [],
    env: runnerEnvironment({ ...runnerEnvOfRun({ runId, branch: "", resultBranch, agentCommand: ["true"], prompt: "", publicKeyPem }), ...placement(stateName) }),
  };
}
