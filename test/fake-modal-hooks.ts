import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { afterAll, beforeAll, expect } from "vitest";
import { startFakeModal, type FakeModal } from "./fake-modal.js";

/**
 * One fake Modal for a test file: started before its tests (dist/paddock, every sandbox's
 * runner, built first if missing) and closed after them; the file fails if the provider
 * called an RPC the fake does not implement.
 */
export function useFakeModal(started: (fake: FakeModal) => void): void {
  const root = resolve(import.meta.dirname, "..");
  let fake: FakeModal | undefined;
  beforeAll(async () => {
    if (!existsSync(resolve(root, "dist/paddock"))) execFileSync("npm", ["run", "--silent", "build"], { cwd: root, stdio: "inherit" });
    process.env.MODAL_CONFIG_PATH = "/nonexistent/.modal.toml"; // never the machine's own profile
    fake = await startFakeModal({ paddockBinary: resolve(root, "dist/paddock") });
    started(fake);
  }, 300_000);
  afterAll(async () => {
    if (!fake) return;
    const unimplemented = [...fake.unimplemented];
    await fake.close();
    expect(unimplemented, "RPCs the provider called that the fake does not implement").toEqual([]);
  });
}
