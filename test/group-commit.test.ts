import { spawn } from "node:child_process";
import { once } from "node:events";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { Database } from "../src/store/database.js";
import { tempDir } from "./fixtures.js";
import { bareManager, bareStart } from "./fixtures/bare-manager.js";

/**
 * The group commit (src/runs/group-commit.ts): new runs, transitions and paddock's own log
 * lines of one event-loop turn are written in one transaction at its end. What must hold:
 * nothing a client was told is lost to a SIGKILL, and lines and transitions come back in
 * the order they happened.
 */
const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

interface Stored {
  id: string;
  phase: string;
  lines: { seq: number; text: string }[];
}

function stored(db: Database): Stored[] {
  const runs = db.prepare<{ id: string; phase: string }>("SELECT id, phase FROM runs ORDER BY seq").all();
  const lines = db.prepare<{ seq: number; text: string }>("SELECT seq, text FROM run_logs WHERE run_id = ? ORDER BY seq");
  return runs.map((r) => ({ ...r, lines: lines.all([r.id]) }));
}

/** The order paddock writes its lines in, for a run of the bare provider; each line comes after the ones before it. */
const ORDER = [/^run queued/, /^daemon restarted/, /^provisioning bare sandbox/, /^note: the bare provider/, /^agent started/, /^sandbox .* removed$/];

function checkRun(run: Stored): void {
  expect(run.lines.map((l) => l.seq), `seqs of ${run.id}`).toEqual(run.lines.map((_, i) => i + 1));
  expect(run.lines[0]?.text, run.id).toMatch(/^run queued/);
  const rank = (text: string) => ORDER.findIndex((re) => re.test(text));
  const ranks = run.lines.map((l) => rank(l.text)).filter((r) => r !== 1); // a restart's note may come anywhere
  expect(run.lines.every((l) => rank(l.text) >= 0), `lines of ${run.id}: ${run.lines.map((l) => l.text).join(" | ")}`).toBe(true);
  // A restart may provision a run again (its lines then repeat, in order); never backwards otherwise.
  for (let i = 1; i < ranks.length; i++) if (ranks[i]! < ranks[i - 1]!) expect(ranks[i], `lines of ${run.id}`).toBe(2);
  // Lines are stored with or before the transition that followed them.
  if (["running", "failed", "cleaned"].includes(run.phase)) expect(run.lines.some((l) => /^provisioning /.test(l.text)), run.id).toBe(true);
  if (["failed", "cleaned"].includes(run.phase)) expect(run.lines.some((l) => /^agent started/.test(l.text)), run.id).toBe(true);
  if (run.phase === "cleaned") expect(run.lines[run.lines.length - 1]!.text, run.id).toMatch(/^sandbox .* removed$/);
}

describe("group commit", () => {
  it("stores a run's lines and transitions in the order they happened, and readers see them at once", async () => {
    const dir = tempDir("group-commit");
    dirs.push(dir);
    const { manager, db, close } = await bareManager(dir);
    try {
      await manager.restore();
      const ids = Array.from({ length: 20 }, () => manager.start(bareStart).id);
      // Read in the same turn as the starts: get() flushes first, so the rows are there.
      expect(manager.get(ids[0]!)).toMatchObject({ id: ids[0], runNumber: 1 });
      expect(manager.list({ team: "default" }, Number.MAX_SAFE_INTEGER, 100).map((r) => r.runNumber).sort((a, b) => a - b)).toEqual(ids.map((_, i) => i + 1));
      const final = await Promise.all(ids.map((id) => manager.waitForCleaned(id, AbortSignal.timeout(30_000))));
      expect(final.map((r) => r.phase)).toEqual(ids.map(() => "cleaned"));
      const runs = stored(db);
      expect(runs.map((r) => r.id)).toEqual(ids);
      for (const run of runs) {
        checkRun(run);
        expect(run.lines.map((l) => l.text.split(" ")[0])).toEqual(["run", "provisioning", "note:", "agent", "sandbox"]);
      }
      // StreamLogs of a cleaned run replays them all and ends.
      const seen: string[] = [];
      for await (const batch of manager.logs(ids[3]!, 0, true, AbortSignal.timeout(10_000))) seen.push(...batch.map((l) => l.text));
      expect(seen).toEqual(runs[3]!.lines.map((l) => l.text));
    } finally {
      await close();
    }
  });

  it("after a SIGKILL: every run a client was told of is stored, lines and transitions in order, and a restart finishes them", async () => {
    const dir = tempDir("group-commit-kill");
    dirs.push(dir);
    const told: string[] = [];
    // Two lives: each kills itself right after answering StartRun, the second after
    // restoring what the first left.
    for (const batches of [8, 5]) {
      const child = spawn(process.execPath, ["--import", "tsx", join(import.meta.dirname, "fixtures", "group-commit-child.ts"), dir, String(batches)], { stdio: ["ignore", "pipe", "inherit"] });
      let out = "";
      child.stdout!.on("data", (d: Buffer) => (out += d));
      const [, signal] = (await once(child, "exit")) as [number | null, string | null];
      expect(signal).toBe("SIGKILL");
      told.push(...out.split("\n").filter(Boolean));
    }
    expect(told).toHaveLength(5 * (8 + 5));
    const { manager, db, close } = await bareManager(dir);
    try {
      const afterKill = stored(db);
      const ids = new Set(afterKill.map((r) => r.id));
      expect(told.filter((id) => !ids.has(id)), "runs a client was told of but the store lost").toEqual([]);
      for (const run of afterKill) checkRun(run);
      // A restart resumes every run that is not cleaned, and each ends with its lines in order.
      await manager.restore();
      const live = afterKill.filter((r) => r.phase !== "cleaned").map((r) => r.id);
      await Promise.all(live.map((id) => manager.waitForCleaned(id, AbortSignal.timeout(60_000))));
      const finished = stored(db);
      expect(finished.map((r) => r.phase)).toEqual(finished.map(() => "cleaned"));
      for (const run of finished) checkRun(run);
      for (const id of live) expect(finished.find((r) => r.id === id)!.lines.some((l) => /^daemon restarted/.test(l.text)), id).toBe(true);
    } finally {
      await close();
    }
  }, 120_000);
});
