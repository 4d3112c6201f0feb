import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type Docker from "dockerode";
import { SandboxError } from "../../errors.js";
import { LABEL_INSTANCE } from "./container-spec.js";

const run = promisify(execFile);

export interface EgressNetwork {
  name: string;
  subnet: string;
  gateway: string;
}

/**
 * The network restricted sandboxes live on: Docker "internal" (no route out) and without
 * inter-container traffic. One per daemon instance, labelled for it.
 */
export async function ensureEgressNetwork(docker: Docker, instanceId: string): Promise<EgressNetwork> {
  const name = `paddock-egress-${instanceId}`;
  let info = await docker
    .getNetwork(name)
    .inspect()
    .catch(() => null);
  if (!info) {
    await docker.createNetwork({
      Name: name,
      Driver: "bridge",
      Internal: true,
      Labels: { [LABEL_INSTANCE]: instanceId },
      Options: { "com.docker.network.bridge.enable_icc": "false" },
    });
    info = await docker.getNetwork(name).inspect();
  }
  const cfg = (info as { IPAM?: { Config?: { Subnet?: string; Gateway?: string }[] } }).IPAM?.Config?.[0];
  if (!cfg?.Subnet || !cfg.Gateway) throw new SandboxError(`docker network ${name} has no subnet or gateway`, false);
  return { name, subnet: cfg.Subnet, gateway: cfg.Gateway };
}

/**
 * An internal network still reaches every service of the host through its gateway. These
 * rules let its containers reach the host only at the egress proxy, and answer the
 * daemon's own connections (established ones); everything else is rejected.
 */
export async function firewallEgressNetwork(net: EgressNetwork, proxyPort: number, instanceId: string): Promise<void> {
  const chain = `PADDOCK-${instanceId.slice(0, 12)}`;
  const ipt = (...args: string[]) => run("iptables", ["-w", ...args]);
  try {
    await ipt("-N", chain).catch(() => undefined); // exists already
    await ipt("-F", chain);
    await ipt("-A", chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT");
    await ipt("-A", chain, "-p", "tcp", "-d", net.gateway, "--dport", String(proxyPort), "-j", "ACCEPT");
    await ipt("-A", chain, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset");
    await ipt("-A", chain, "-j", "DROP");
    const jump = ["INPUT", "-s", net.subnet, "-j", chain];
    await ipt("-C", ...jump).catch(() => ipt("-I", ...jump));
  } catch (error) {
    throw new SandboxError(`cannot fence the sandbox network with iptables (is the daemon root?): ${(error as { stderr?: string }).stderr?.trim() || (error as Error).message}`, false);
  }
}

/** Removes this instance's network and firewall chain (for tests and uninstalls). */
export async function removeEgressNetwork(docker: Docker, instanceId: string): Promise<void> {
  const name = `paddock-egress-${instanceId}`;
  const info = await docker
    .getNetwork(name)
    .inspect()
    .catch(() => null);
  if (!info) return;
  const subnet = (info as { IPAM?: { Config?: { Subnet?: string }[] } }).IPAM?.Config?.[0]?.Subnet;
  const chain = `PADDOCK-${instanceId.slice(0, 12)}`;
  const ipt = (...args: string[]) => run("iptables", ["-w", ...args]).catch(() => undefined);
  if (subnet) await ipt("-D", "INPUT", "-s", subnet, "-j", chain);
  await ipt("-F", chain);
  await ipt("-X", chain);
  await docker.getNetwork(name).remove().catch(() => undefined);
}
