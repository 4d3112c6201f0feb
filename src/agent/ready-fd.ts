import { closeSync, writeSync } from "node:fs";
import type { RunnerInfo } from "./runner-protocol.js";

let told = false;

/**
 * Tells the provider that spawned this runner where it listens: one line of JSON on the
 * pipe it gave (PADDOCK_READY_FD), then the pipe is closed. Once per process: a pool
 * runner says so for its claim port, and its run's runner is found through runner.json and
 * the claim's answer. A daemon gone meanwhile (EPIPE) is no error: it reads runner.json.
 */
export function announceReady(fd: number | undefined, info: RunnerInfo & { pooled?: boolean }): void {
  if (fd === undefined || told) return;
  told = true;
  try {
    writeSync(fd, JSON.stringify(info) + "\n");
  } catch {
    /* nobody reads it any more */
  }
  try {
    closeSync(fd);
  } catch {
    /* closed */
  }
}
