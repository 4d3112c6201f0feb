import { execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
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

export interface OpenNetwork {
  name: string;
  /** The host-side bridge interface: the firewall matches it, so no source address can be forged. */
  bridge: string;
  gateway: string;
}

/** Ranges no unrestricted sandbox may reach unless the operator allows them. */
const PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8"];

const openName = (instanceId: string) => `paddock-open-${instanceId}`;
// Interface names are at most 15 characters.
const openBridge = (instanceId: string) => `pdk-${instanceId.slice(0, 11)}`;
const hostChain = (instanceId: string) => `PADDOCK-${instanceId.slice(0, 12)}-HOST`;
const forwardChain = (instanceId: string) => `PADDOCK-${instanceId.slice(0, 12)}-FWD`;

/** The docker networks and iptables chains an instance makes (for `paddock cleanup --instance`). */
export function instanceNetworking(instanceId: string): { networks: string[]; chains: string[] } {
  return {
    networks: [`paddock-egress-${instanceId}`, openName(instanceId)],
    chains: [`PADDOCK-${instanceId.slice(0, 12)}`, hostChain(instanceId), forwardChain(instanceId)],
  };
}

/**
 * The network unrestricted sandboxes live on: routed to the internet, no inter-container
 * traffic, its bridge named after the instance so the firewall can match it.
 */
export async function ensureOpenNetwork(docker: Docker, instanceId: string): Promise<OpenNetwork> {
  const name = openName(instanceId);
  const bridge = openBridge(instanceId);
  let info = await docker
    .getNetwork(name)
    .inspect()
    .catch(() => null);
  if (!info) {
    await docker
      .createNetwork({
        Name: name,
        Driver: "bridge",
        Labels: { [LABEL_INSTANCE]: instanceId },
        Options: { "com.docker.network.bridge.enable_icc": "false", "com.docker.network.bridge.name": bridge },
      })
      .catch((e: unknown) => ((e as { statusCode?: number }).statusCode === 409 ? undefined : Promise.reject(e))); // made meanwhile
    info = await docker.getNetwork(name).inspect();
  }
  const { IPAM, Options } = info as { IPAM?: { Config?: { Gateway?: string }[] }; Options?: Record<string, string> };
  // The firewall matches the bridge by name: a network made otherwise would go unfenced.
  if (Options?.["com.docker.network.bridge.name"] !== bridge) throw new SandboxError(`docker network ${name} does not use the bridge ${bridge}; remove it and restart`, false);
  const gateway = IPAM?.Config?.[0]?.Gateway;
  if (!gateway) throw new SandboxError(`docker network ${name} has no gateway`, false);
  return { name, bridge, gateway };
}

/** Why the host's firewall cannot be changed from here, or null when it can. */
export async function firewallProblem(): Promise<string | null> {
  try {
    await run("iptables", ["-w", "-S", "DOCKER-USER"]);
    return null;
  } catch (error) {
    return iptablesReason(error);
  }
}

/**
 * Fences the open network: a sandbox there reaches no address of the host (INPUT), and no
 * private, shared or link-local range when forwarded (DOCKER-USER), except what the
 * operator allows and DNS to the resolvers Docker forwards to. Connections the host opens
 * into a sandbox (the daemon to its runner) are answered. The chains are rewritten in one
 * iptables-restore, so a restart never leaves them open, even briefly; allowed traffic
 * RETURNs, so Docker's own rules and the host's firewall still apply.
 */
export async function firewallOpenNetwork(net: OpenNetwork, instanceId: string, allowCidrs: readonly string[], resolvers = hostResolvers()): Promise<void> {
  const host = hostChain(instanceId);
  const fwd = forwardChain(instanceId);
  const allow = (chain: string) => [
    `-A ${chain} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN`,
    ...allowCidrs.map((c) => `-A ${chain} -d ${c} -j RETURN`),
    ...resolvers.flatMap((r) => ["udp", "tcp"].map((p) => `-A ${chain} -d ${r}/32 -p ${p} --dport 53 -j RETURN`)),
  ];
  const rules = [
    "*filter",
    `:${host} - [0:0]`,
    `:${fwd} - [0:0]`,
    ...allow(host),
    `-A ${host} -p tcp -j REJECT --reject-with tcp-reset`,
    `-A ${host} -j REJECT --reject-with icmp-port-unreachable`,
    ...allow(fwd),
    ...PRIVATE_RANGES.flatMap((r) => [`-A ${fwd} -d ${r} -p tcp -j REJECT --reject-with tcp-reset`, `-A ${fwd} -d ${r} -j REJECT --reject-with icmp-net-unreachable`]),
    "COMMIT",
    "",
  ].join("\n");
  try {
    await restore(rules);
    for (const jump of [["INPUT", "-i", net.bridge, "-j", host], ["DOCKER-USER", "-i", net.bridge, "-j", fwd]]) {
      await run("iptables", ["-w", "-C", ...jump]).catch(() => run("iptables", ["-w", "-I", jump[0]!, "1", ...jump.slice(1)]));
    }
  } catch (error) {
    throw new SandboxError(`cannot fence the open sandbox network with iptables: ${iptablesReason(error)}`, false);
  }
}

/**
 * The IPv4 name servers of the host, where Docker's embedded DNS sends the sandboxes'
 * lookups (from the container's own address on older engines, so they must pass).
 */
export function hostResolvers(files = ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"]): string[] {
  const found = new Set<string>();
  for (const file of files) {
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const m of text.matchAll(/^\s*nameserver\s+(\d{1,3}(?:\.\d{1,3}){3})\s*$/gm)) if (!m[1]!.startsWith("127.")) found.add(m[1]!);
  }
  return [...found];
}

function restore(rules: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("iptables-restore", ["-w", "--noflush"], { stdio: ["pipe", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve() : reject(Object.assign(new Error(`iptables-restore exited with ${code}`), { stderr }))));
    child.stdin.end(rules);
  });
}

function iptablesReason(error: unknown): string {
  const e = error as { code?: string; stderr?: string; message: string };
  if (e.code === "ENOENT") return "iptables is not installed";
  return `${e.stderr?.trim() || e.message} (is the daemon root, and does Docker manage iptables?)`;
}

/** Removes this instance's networks and firewall chains (for tests and uninstalls). */
export async function removeEgressNetwork(docker: Docker, instanceId: string): Promise<void> {
  const ipt = (...args: string[]) => run("iptables", ["-w", ...args]).catch(() => undefined);
  const name = `paddock-egress-${instanceId}`;
  const info = await docker
    .getNetwork(name)
    .inspect()
    .catch(() => null);
  if (info) {
    const subnet = (info as { IPAM?: { Config?: { Subnet?: string }[] } }).IPAM?.Config?.[0]?.Subnet;
    const chain = `PADDOCK-${instanceId.slice(0, 12)}`;
    if (subnet) await ipt("-D", "INPUT", "-s", subnet, "-j", chain);
    await ipt("-F", chain);
    await ipt("-X", chain);
    await docker.getNetwork(name).remove().catch(() => undefined);
  }
  const bridge = openBridge(instanceId);
  for (const [hook, chain] of [["INPUT", hostChain(instanceId)], ["DOCKER-USER", forwardChain(instanceId)]] as const) {
    await ipt("-D", hook, "-i", bridge, "-j", chain);
    await ipt("-F", chain);
    await ipt("-X", chain);
  }
  await docker
    .getNetwork(openName(instanceId))
    .remove()
    .catch(() => undefined);
}
