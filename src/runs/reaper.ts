import type { Logger } from "pino";
import type { SandboxProvider } from "../sandbox/provider.js";

/**
 * Removes every sandbox of this daemon that no live run owns: left by a crash, stuck in
 * "created", or made by a provisioning that outlived its run; then lets each provider
 * collect its snapshots. Providers list only their own instance's sandboxes, so another
 * daemon's and unlabelled ones are never touched. `owned` is read after each listing.
 */
export async function reapOrphans(providers: ReadonlyMap<string, SandboxProvider>, owned: () => ReadonlySet<string>, logger: Logger): Promise<string[]> {
  const removed: string[] = [];
  for (const provider of providers.values()) {
    const names = await provider.list().catch((error: unknown) => {
      logger.warn({ err: error, provider: provider.name }, "could not list sandboxes to reap");
      return [] as string[];
    });
    const live = owned();
    for (const name of names) {
      if (live.has(name)) continue;
      logger.warn({ sandbox: name, provider: provider.name }, "removing a sandbox no live run owns");
      try {
        await provider.destroy(name, AbortSignal.timeout(120_000));
        removed.push(name);
      } catch (error) {
        logger.error({ err: error, sandbox: name }, "could not remove orphaned sandbox");
      }
    }
    const collected = await provider.collectGarbage?.().catch((error: unknown) => {
      logger.warn({ err: error, provider: provider.name }, "snapshot garbage collection failed");
      return 0;
    });
    if (collected) logger.info({ provider: provider.name, removed: collected }, "snapshots collected");
  }
  return removed;
}
