import { execFile } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import Docker from "dockerode";
import { EXIT } from "../cli/exit.js";
import type { Config } from "../config.js";
import { LABEL_INSTANCE } from "../sandbox/docker/container-spec.js";
import { instanceNetworking, removeEgressNetwork } from "../sandbox/docker/egress-network.js";
import { DataDirLockedError, lockDataDir } from "../store/data-dir-lock.js";
import { openDatabase } from "../store/open-database.js";
import { createRunsRepository } from "../store/runs-repository.js";
import { createSnapshotsRepository } from "../store/snapshots-repository.js";

const run = promisify(execFile);

export const CLEANUP_HELP = `usage: paddock cleanup --instance [--yes] [flags of paddock serve]

Removes what this data dir's daemon instance left in the Docker engine and the firewall:
its sandbox containers, snapshot images, docker networks and iptables chains, and its
local workspaces' root. Only when no daemon runs on the data dir (it takes the lock) and
no run is unfinished (start the daemon and let them end, or cancel them, first).

  --instance   required: what is removed is this instance's (its id is in the database)
  --yes        remove; without it, print what would be removed and change nothing`;

interface Plan {
  instance: string;
  containers: { id: string; name: string }[];
  images: { id: string; tags: string[] }[];
  networks: string[];
  chains: string[];
  workRoot: string | null;
}

async function existingChains(names: string[]): Promise<string[]> {
  try {
    const { stdout } = await run("iptables", ["-w", "-S"]);
    const made = new Set(stdout.split("\n").filter((l) => l.startsWith("-N ")).map((l) => l.slice(3).trim()));
    return names.filter((n) => made.has(n));
  } catch {
    return []; // no iptables, or not allowed to read it: nothing of ours can be there to remove
  }
}

/**
 * A chain whose network is gone already (so removeEgressNetwork cannot name the jump to
 * it by subnet): every rule jumping to it is deleted by its own spec, then the chain.
 */
async function dropChain(chain: string): Promise<void> {
  const { stdout } = await run("iptables", ["-w", "-S"]);
  for (const rule of stdout.split("\n").filter((l) => l.startsWith("-A ") && l.endsWith(` -j ${chain}`))) {
    await run("iptables", ["-w", "-D", ...rule.slice(3).split(" ")]);
  }
  await run("iptables", ["-w", "-F", chain]);
  await run("iptables", ["-w", "-X", chain]);
}

/** `paddock cleanup --instance`. */
export async function cleanupInstance(config: Config, io: { out: (l: string) => void; err: (l: string) => void }, opts: { yes: boolean }): Promise<number> {
  const dbPath = join(config.dataDir, "paddock.db");
  if (!existsSync(dbPath)) {
    io.err(`paddock: no paddock database at ${dbPath}: no instance to clean up (give the daemon's --data-dir)`);
    return EXIT.notFound;
  }
  let lock;
  try {
    lock = await lockDataDir(config.dataDir);
  } catch (error) {
    if (!(error instanceof DataDirLockedError)) throw error;
    io.err(`paddock: a daemon is running on ${config.dataDir} (${error.holderPid === null ? "pid not known yet" : `pid ${error.holderPid}`}); stop it first (systemctl stop paddock)`);
    return EXIT.precondition;
  }
  const db = await openDatabase(dbPath);
  try {
    const instance = db.prepare<{ value: string }>("SELECT value FROM meta WHERE key = 'instance_id'").get()?.value;
    if (!instance) {
      io.out("this data dir's daemon never started: nothing to clean up");
      return EXIT.ok;
    }
    const live = createRunsRepository(db).live();
    if (live.length > 0) {
      io.err(
        `paddock: ${live.length} run(s) of this instance are not finished: ${live.map((r) => `${r.id} (${r.phase})`).join(", ")}\n` +
          "start the daemon and let them end (or paddock run cancel them), then run cleanup again; nothing was removed",
      );
      return EXIT.precondition;
    }
    const docker = existsSync(config.dockerSocket) ? new Docker({ socketPath: config.dockerSocket }) : null;
    const label = `${LABEL_INSTANCE}=${instance}`;
    const { networks, chains } = instanceNetworking(instance);
    const workRoot = config.localWorkDir || join("/var/lib/paddock-work", instance);
    const plan: Plan = {
      instance,
      containers: docker ? (await docker.listContainers({ all: true, filters: { label: [label] } })).map((c) => ({ id: c.Id, name: (c.Names[0] ?? c.Id).replace(/^\//, "") })) : [],
      images: docker ? (await docker.listImages({ filters: { label: [label] } })).map((i) => ({ id: i.Id, tags: i.RepoTags ?? [] })) : [],
      networks: docker ? (await docker.listNetworks({ filters: { name: networks } })).map((n) => n.Name).filter((n) => networks.includes(n)) : [],
      chains: await existingChains(chains),
      workRoot: existsSync(workRoot) ? workRoot : null,
    };
    const lines = [
      ...plan.containers.map((c) => `container ${c.name} (${c.id.slice(0, 12)})`),
      ...plan.images.map((i) => `snapshot image ${i.tags[0] ?? i.id.slice(7, 19)}`),
      ...plan.networks.map((n) => `docker network ${n}`),
      ...plan.chains.map((c) => `iptables chain ${c}`),
      ...(plan.workRoot ? [`local workspaces root ${plan.workRoot}`] : []),
    ];
    if (!docker) io.out(`note: no docker socket at ${config.dockerSocket}; docker objects were not looked for`);
    if (lines.length === 0) {
      io.out(`instance ${instance}: nothing to remove`);
      return EXIT.ok;
    }
    if (!opts.yes) {
      io.out(`instance ${instance}: would remove\n${lines.map((l) => `  ${l}`).join("\n")}\nnothing removed; run again with --yes to remove them`);
      return EXIT.ok;
    }
    let failed = 0;
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
        io.out(`removed ${what}`);
      } catch (error) {
        failed++;
        io.err(`paddock: could not remove ${what}: ${(error as Error).message}`);
      }
    };
    for (const c of plan.containers) await step(`container ${c.name}`, () => docker!.getContainer(c.id).remove({ force: true, v: true }));
    const snapshots = createSnapshotsRepository(db);
    for (const i of plan.images) await step(`snapshot image ${i.tags[0] ?? i.id.slice(7, 19)}`, () => docker!.getImage(i.id).remove({ force: true }));
    // Their rows would point at images that are gone.
    for (const s of snapshots.list("docker")) snapshots.remove(s.id);
    if (docker && (plan.networks.length > 0 || plan.chains.length > 0)) {
      await step(`networks and firewall chains (${[...plan.networks, ...plan.chains].join(", ")})`, async () => {
        await removeEgressNetwork(docker, instance);
        for (const chain of await existingChains(chains)) await dropChain(chain);
        const left = [...(await docker.listNetworks({ filters: { name: networks } })).map((n) => n.Name).filter((n) => networks.includes(n)), ...(await existingChains(chains))];
        if (left.length > 0) throw new Error(`still there: ${left.join(", ")}`);
      });
    }
    if (plan.workRoot) await step(`local workspaces root ${plan.workRoot}`, async () => rmSync(plan.workRoot!, { recursive: true, force: true }));
    return failed ? EXIT.failed : EXIT.ok;
  } finally {
    db.close();
    lock.release();
  }
}
