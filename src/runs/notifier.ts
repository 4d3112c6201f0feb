import { EventEmitter } from "node:events";

/**
 * Change notification per key. A subscriber's wait() resolves at once if anything was
 * notified since its previous wait() began, so "read the store, then wait" never misses
 * a change made between the read and the wait.
 */
export class Notifier {
  private readonly emitter = new EventEmitter().setMaxListeners(0);

  notify(key: string): void {
    this.emitter.emit(key);
  }

  subscribe(keys: string[]) {
    let dirty = false;
    let wake: (() => void) | null = null;
    const onChange = () => {
      dirty = true;
      wake?.();
    };
    for (const k of keys) this.emitter.on(k, onChange);
    return {
      /** Call before reading the store; then wait() covers everything after the read. */
      arm(): void {
        dirty = false;
      },
      wait(signal: AbortSignal): Promise<void> {
        if (dirty || signal.aborted) return Promise.resolve();
        return new Promise<void>((resolve) => {
          const done = () => {
            wake = null;
            signal.removeEventListener("abort", done);
            resolve();
          };
          wake = done;
          signal.addEventListener("abort", done, { once: true });
        });
      },
      close: () => {
        for (const k of keys) this.emitter.off(k, onChange);
      },
    };
  }
}
