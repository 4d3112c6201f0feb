import type Docker from "dockerode";
import { LABEL_INSTANCE } from "./container-spec.js";

/**
 * On a network holder: the network whose namespace it holds ("default" for Docker's own
 * bridge). A holder is a container that does nothing but keep a network namespace, set up
 * ahead of any run; one sandbox joins it (`container:<id>`) and it goes with that sandbox.
 */
export const LABEL_NETNS = "paddock.netns";

/** The key (and network mode) of a network: its name, or "default" for Docker's own bridge. */
export function networkKey(networkMode: string | undefined): string {
  return networkMode || "default";
}

/**
 * A holder on `network`: `sleep` as its only process, with no capabilities, no privileges
 * to gain, a read-only root and little memory. Nothing of any run is in it, and the sandbox
 * that joins it shares only its network namespace (not its processes or files).
 */
export function holderSpec(o: { name: string; image: string; instanceId: string; network: string }): Docker.ContainerCreateOptions {
  return {
    name: o.name,
    Image: o.image,
    Entrypoint: ["sleep", "infinity"],
    Cmd: [],
    Env: [],
    Labels: { [LABEL_INSTANCE]: o.instanceId, [LABEL_NETNS]: o.network },
    HostConfig: {
      NetworkMode: o.network,
      CapDrop: ["ALL"],
      SecurityOpt: ["no-new-privileges"],
      ReadonlyRootfs: true,
      Memory: 16 * 1024 * 1024,
      PidsLimit: 8,
      RestartPolicy: { Name: "no" },
      AutoRemove: false,
    },
  };
}

/** The holder a container's network mode names (`container:<id>`), or undefined. */
export function holderOf(networkMode: string | undefined): string | undefined {
  return networkMode?.startsWith("container:") ? networkMode.slice("container:".length) : undefined;
}

/** The first address a container has on any of its networks. */
export function addressOf(info: { NetworkSettings?: { Networks?: Record<string, { IPAddress?: string }> } }): string | undefined {
  return Object.values(info.NetworkSettings?.Networks ?? {}).find((n) => n.IPAddress)?.IPAddress;
}

/**
 * Which of this instance's containers are holders that still serve a sandbox (a container
 * of the listing joins them): those are part of that sandbox, never orphans of their own.
 */
export function servingHolders(containers: readonly Docker.ContainerInfo[]): Set<string> {
  const joined = new Set(containers.flatMap((c) => holderOf(c.HostConfig?.NetworkMode) ?? []));
  return new Set(containers.filter((c) => c.Labels?.[LABEL_NETNS] !== undefined && joined.has(c.Id)).map((c) => c.Id));
}
