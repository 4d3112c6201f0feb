import { spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { tempDir } from "./fixtures.js";
import { heldManager } from "./fixtures/held-manager.js";

/**
 * A daemon upgraded while runs are in flight. test/fixtures/machine-v1-runs.json holds
 * the rows of three live runs (running, provisioning, queued) exactly as the daemon before
 * MACHINE_VERSION 2 stored them (made by test/fixtures/make-machine-v1-runs.ts on that
 * code): an XState actor's snapshot with the deadline as an invoked child. Only their
 * deadlines are moved to the near future; the new daemon must resume all three and end
 * each with "timed out" at its deadline, not before.
 */
type Row = Record<string, unknown> & { id: string; phase: string; deadline_at: number; snapshot: string };

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

describe("runs stored by machine version 1", () => {
  it("resume after the upgrade, and their deadlines still fire", async () => {
    const dir = tempDir("machine-v1");
    dirs.push(dir);
    const rows = JSON.parse(readFileSync(join(import.meta.dirname, "fixtures", "machine-v1-runs.json"), "utf8")) as Row[];
    expect(rows.map((r) => r.phase)).toEqual(["running", "provisioning", "queued"]);
    for (const r of rows) expect(JSON.stringify(Object.values(JSON.parse(r.snapshot).children).map((c) => (c as { src: string }).src))).toContain("deadline");

    // The provisioning run's sandbox never comes up: only its deadline ends it.
    const held = await heldManager(dir, { maxConcurrentRuns: 2, hangs: (name) => name.includes(rows[1]!.id) });
    const { manager, db, polled, provisioned, destroyed } = held;
    // The stored rows as they are, but for their deadlines: 1.5 s, 2 s and 2.5 s from now.
    const now = Date.now();
    const deadlines = new Map(rows.map((r, i) => [r.id, now + 1500 + 500 * i]));
    for (const r of rows) {
      const at = deadlines.get(r.id)!;
      const snapshot = r.snapshot.replaceAll(String(r.deadline_at), String(at));
      expect(snapshot).not.toBe(r.snapshot);
      const row = { ...r, deadline_at: at, snapshot };
      const cols = Object.keys(row);
      db.prepare(`INSERT INTO runs (${cols.join(", ")}) VALUES (${cols.map(() => "?").join(", ")})`).run(Object.values(row) as never);
    }

    try {
      await manager.restore();
      // Resumed: the running run's supervision polls its runner again, the provisioning
      // run is provisioned again, and the queued run waits behind the two slots.
      await expect.poll(() => polled.size, { timeout: 10_000 }).toBe(1);
      await expect.poll(() => provisioned, { timeout: 10_000 }).toEqual([`paddock-${rows[1]!.id}-1`]);
      expect(manager.get(rows[0]!.id).phase).toBe("running");
      expect(manager.get(rows[1]!.id).phase).toBe("provisioning");
      expect(manager.get(rows[2]!.id)).toMatchObject({ phase: "queued", queuePosition: 1 });

      const final = await Promise.all(rows.map((r) => manager.waitForCleaned(r.id, AbortSignal.timeout(20_000))));
      for (const run of final) {
        expect(run, run.id).toMatchObject({ status: "failed", phase: "cleaned", errorMessage: "timed out" });
        expect(run.finishedAt!, `${run.id} ended before its deadline`).toBeGreaterThanOrEqual(deadlines.get(run.id)!);
      }
      // Written back in the current format: no deadline child in the stored snapshot.
      const stored = db.prepare<{ snapshot: string; machine_version: number }>("SELECT snapshot, machine_version FROM runs ORDER BY seq").all();
      for (const s of stored) {
        expect(s.machine_version).toBe(2);
        expect(s.snapshot).not.toContain('"src":"deadline"');
      }
      expect(destroyed.sort()).toEqual(rows.map((r) => `paddock-${r.id}-1`).sort());
    } finally {
      await held.close();
    }
  }, 60_000);
});

describe("deadlines across a SIGKILL", () => {
  it("a restarted daemon ends its runs at their stored deadlines: running, provisioning and queued", async () => {
    const dir = tempDir("deadline-kill");
    dirs.push(dir);
    const child = spawn(process.execPath, ["--import", "tsx", join(import.meta.dirname, "fixtures", "deadline-kill-child.ts"), dir, "3000"], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out += d));
    const [, signal] = (await once(child, "exit")) as [number | null, string | null];
    expect(signal).toBe("SIGKILL");
    const ids = out.split("\n").filter(Boolean);
    expect(ids).toHaveLength(3);
    const held = await heldManager(dir, { maxConcurrentRuns: 2, hangs: (name) => name.includes(ids[1]!) });
    try {
      const { manager } = held;
      expect(ids.map((id) => manager.get(id).phase)).toEqual(["running", "provisioning", "queued"]);
      const deadlines = ids.map((id) => manager.get(id).deadlineAt);
      await manager.restore();
      const final = await Promise.all(ids.map((id) => manager.waitForCleaned(id, AbortSignal.timeout(20_000))));
      final.forEach((run, i) => {
        expect(run, run.id).toMatchObject({ status: "failed", phase: "cleaned", errorMessage: "timed out" });
        expect(run.finishedAt!).toBeGreaterThanOrEqual(deadlines[i]!);
      });
    } finally {
      await held.close();
    }
  }, 60_000);
});
