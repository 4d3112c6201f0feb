import type { PoolSpec } from "../sandbox/docker/docker-provider.js";
import type { EnvironmentRecord } from "../store/environments-repository.js";
import { networkOf, setupHash } from "./environments.js";

/** What starts pool members ahead of any run (the docker provider). */
export interface PoolWarmer {
  prewarm(spec: PoolSpec, size: number): Promise<void>;
  resizeEnvironmentPool(environmentId: string, size: number | null): void;
  readonly brokersSecrets: boolean;
}

/**
 * Starts the warm pool an environment asks for (warm_pool > 0) in the background, for each
 * repository it lists, as its runs will want it: its image, network policy, setup and
 * brokered secrets, the provider's limits. Runs of other repositories, or with limits of
 * their own, teach the pool their key at their first run. Failures are logged, not thrown.
 */
export function warmEnvironment(env: EnvironmentRecord, warmer: PoolWarmer | undefined, resolve: (repository: string) => string, log: (message: string) => void): void {
  if (!warmer) return;
  // The keys its runs already use take the size now (fewer members: removed at once).
  warmer.resizeEnvironmentPool(env.id, env.warmPool);
  if (env.warmPool <= 0) return;
  for (const repository of env.repositories) {
    let spec: PoolSpec;
    try {
      spec = {
        repositoryUrl: resolve(repository),
        image: env.image,
        network: networkOf(env),
        brokered: warmer.brokersSecrets && env.secrets.some((s) => s.broker),
        limits: {},
        setupHash: setupHash(env),
        environmentId: env.id,
      };
    } catch (error) {
      log(`warm pool of environment ${env.id} for ${repository} not started: ${(error as Error).message}`);
      continue;
    }
    warmer.prewarm(spec, env.warmPool).catch((error: unknown) => log(`warm pool of environment ${env.id} for ${repository} not started: ${(error as Error).message}`));
  }
}
