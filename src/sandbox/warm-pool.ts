import { randomBytes } from "node:crypto";

/** A started sandbox whose runner waits for its claim. */
export interface PoolMember {
  name: string;
  /** The container's id: its name changes when it is claimed. */
  id: string;
  key: string;
  /** The recipe it was made from (recipeId): a key's recipe changes when a snapshot of it appears. */
  recipe: string;
  /** What the daemon claims it with; only its hash is in the sandbox. */
  secret: string;
  endpoint: string;
}

export interface WarmPoolOptions<R> {
  /** Members kept ready per key unless the key's `want` says otherwise; 0: none. */
  size: number;
  /** Makes and starts a member of `key` named `name`, resolving once its runner answers; removes what it made on failure. */
  make: (key: string, recipe: R, name: string, secret: string) => Promise<Omit<PoolMember, "recipe">>;
  /** What tells recipes of a key apart (the image): members of an older one are removed, never handed out. */
  recipeId: (recipe: R) => string;
  /** Removes a member (at close, or one that went bad). */
  discard: (name: string) => Promise<void>;
  log: (message: string, error?: unknown) => void;
  /** How its members' names begin (default paddock-pool-). */
  prefix?: string;
  /** What its log lines call it and a member (default "warm pool" and "a sandbox"). */
  title?: { pool: string; member: string };
}

/**
 * Ready sandboxes per key, kept at the key's size in the background. A key is learned from
 * the first run that asks for it, or ahead of any run from an environment that wants
 * members (its recipe says how to make them, its `want` how many); `take` hands one out
 * and starts a refill. Every name the pool made and has not handed over is `owned`, from
 * before its container exists, so a reaper never removes one as an orphan.
 */
export class WarmPool<R> {
  private readonly ready = new Map<string, PoolMember[]>();
  private readonly recipes = new Map<string, R>();
  /** Members kept ready per key, as its last `want` said. */
  private readonly sizes = new Map<string, number>();
  private readonly filling = new Map<string, Promise<void>>();
  /** Keys whose last fill failed, with when to try again: a broken recipe is not retried in a loop. */
  private readonly backoff = new Map<string, number>();
  private readonly ownedNames = new Set<string>();
  /** The keys each environment's runs and pre-warming used. */
  private readonly environmentKeys = new Map<string, Set<string>>();
  private closed = false;

  private readonly title: { pool: string; member: string };

  constructor(private readonly o: WarmPoolOptions<R>) {
    this.title = o.title ?? { pool: "warm pool", member: "a sandbox" };
  }

  /** Members kept ready per key unless its `want` said otherwise. */
  get size(): number {
    return this.o.size;
  }

  /** Members kept ready for the key. */
  sizeOf(key: string): number {
    return this.sizes.get(key) ?? this.o.size;
  }

  /** Whether the pool holds this name (ready, being made, or being handed over). */
  owns(name: string): boolean {
    return this.ownedNames.has(name);
  }

  /** Whether a member of the key made from this recipe is ready. */
  hasReady(key: string, recipe: string): boolean {
    return this.ready.get(key)?.some((m) => m.recipe === recipe) ?? false;
  }

  /** Members ready for the key now. */
  readyCount(key: string): number {
    return this.ready.get(key)?.length ?? 0;
  }

  /**
   * Remembers how members of the key are made now and how many to keep (members made from
   * an earlier recipe of it, or past the size, are removed); `refill` fills it up once the
   * run that asked has its sandbox.
   */
  want(key: string, recipe: R, size = this.o.size): void {
    if (this.closed) return;
    this.sizes.set(key, size);
    const extra = this.ready.get(key)?.splice(Math.max(0, size)) ?? [];
    for (const m of extra) void this.discardOwned(m.name);
    if (size <= 0) return;
    const previous = this.recipes.get(key);
    this.recipes.set(key, recipe);
    if (previous && this.o.recipeId(previous) !== this.o.recipeId(recipe)) {
      const id = this.o.recipeId(recipe);
      const list = this.ready.get(key) ?? [];
      const stale = list.filter((m) => m.recipe !== id);
      this.ready.set(key, list.filter((m) => m.recipe === id));
      for (const m of stale) void this.discardOwned(m.name);
      this.backoff.delete(key);
    }
  }

  /** Records that runs (or pre-warming) of an environment use the key, for resizeEnvironment. */
  noteEnvironment(environmentId: string | undefined, key: string): void {
    if (!environmentId) return;
    const keys = this.environmentKeys.get(environmentId) ?? new Set<string>();
    keys.add(key);
    this.environmentKeys.set(environmentId, keys);
  }

  /**
   * The keys an environment's runs used take `size` now; null (the environment was
   * removed): none, and the environment is forgotten.
   */
  resizeEnvironment(environmentId: string, size: number | null): void {
    const keys = this.environmentKeys.get(environmentId);
    if (size === null) this.environmentKeys.delete(environmentId);
    for (const key of keys ?? []) this.resize(key, size ?? 0);
  }

  /** A known key's size changed (its environment's warm_pool): members past it go now, a larger one fills. */
  resize(key: string, size: number): void {
    const recipe = this.recipes.get(key);
    if (!recipe) return;
    this.want(key, recipe, size);
    this.refill(key);
  }

  /** Fills the key up in the background (a no-op for a key never wanted, or full). */
  refill(key: string): void {
    if (this.recipes.has(key) && this.sizeOf(key) > 0) this.fill(key);
  }

  /**
   * A ready member of the key, or undefined. The pool still owns its name until
   * `handedOver` (its container is being claimed and renamed), which starts the refill:
   * making a container meanwhile would compete with the claim for the machine.
   */
  take(key: string): PoolMember | undefined {
    return this.ready.get(key)?.shift();
  }

  /** The member's name is no longer the pool's (it was claimed and renamed, or removed); its key is refilled. */
  handedOver(member: PoolMember): void {
    this.ownedNames.delete(member.name);
    this.refill(member.key);
  }

  /** Resolves when no fill is under way (tests and benches wait on it). */
  async settled(): Promise<void> {
    while (this.filling.size > 0) await Promise.all(this.filling.values());
  }

  private fill(key: string): void {
    if (this.filling.has(key) || this.closed) return;
    if ((this.backoff.get(key) ?? 0) > Date.now() || this.readyCount(key) >= this.sizeOf(key)) return;
    const run = (async () => {
      await null; // the body runs once `filling` holds it, so its `finally` removes a registered entry
      try {
        while (!this.closed && this.readyCount(key) < this.sizeOf(key)) {
          const name = `${this.o.prefix ?? "paddock-pool-"}${randomBytes(6).toString("hex")}`;
          const secret = randomBytes(32).toString("base64url");
          this.ownedNames.add(name);
          const recipe = this.recipes.get(key)!;
          let member: PoolMember;
          try {
            member = { ...(await this.o.make(key, recipe, name, secret)), recipe: this.o.recipeId(recipe) };
          } catch (error) {
            this.ownedNames.delete(name);
            throw error;
          }
          if (this.closed || member.recipe !== this.o.recipeId(this.recipes.get(key)!) || this.readyCount(key) >= this.sizeOf(key)) {
            await this.discardOwned(member.name);
            continue; // closed or made smaller meanwhile: the loop ends; a newer recipe: made again from it
          }
          const list = this.ready.get(key) ?? [];
          list.push(member);
          this.ready.set(key, list);
          this.o.log(`${this.title.pool}: ${member.name} ready for key ${key}`);
        }
        this.backoff.delete(key);
      } catch (error) {
        this.backoff.set(key, Date.now() + 30_000);
        this.o.log(`${this.title.pool}: ${this.title.member} for key ${key} could not be made; runs of it start without one for now`, error);
      } finally {
        this.filling.delete(key);
      }
    })();
    this.filling.set(key, run);
  }

  private async discardOwned(name: string): Promise<void> {
    try {
      await this.o.discard(name);
    } catch (error) {
      this.o.log(`${this.title.pool}: ${name} could not be removed (the reaper will)`, error);
    }
    this.ownedNames.delete(name);
  }

  /** Stops filling and removes every ready member (daemon shutdown). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.filling.values());
    const all = [...this.ready.values()].flat();
    this.ready.clear();
    await Promise.all(all.map((m) => this.discardOwned(m.name)));
  }
}
