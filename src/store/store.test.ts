import { rmSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { tempDir } from "../../test/fixtures.js";
import { openDatabase, openSqliteFile } from "./open-database.js";
import { migrate, MIGRATIONS } from "./migrations.js";
import { createRunsRepository } from "./runs-repository.js";
import { createTasksRepository } from "./tasks-repository.js";

const dirs: string[] = [];
async function freshDb() {
  const dir = tempDir("store");
  dirs.push(dir);
  return { db: await openDatabase(join(dir, "paddock.db")), path: join(dir, "paddock.db") };
}
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

function seed(db: Awaited<ReturnType<typeof openDatabase>>) {
  const tasks = createTasksRepository(db);
  const runs = createRunsRepository(db);
  const task = tasks.create({ team: "default", environmentId: "", id: "task_1", title: "t", description: "", repository: "/r", repositoryUrl: "/r", origin: "test", createdAt: 1 });
  const run = runs.create({
    team: "default", environmentId: "", networkPolicyEnforced: false, agentIsolated: false, id: "run_1", taskId: task.id, status: "queued", phase: "queued", provider: "local", branch: "", resultBranch: "paddock/run_1",
    agentCommand: ["true"], limits: {}, idempotencyKey: null, deadlineAt: 10, createdAt: 1, updatedAt: 1, snapshot: { value: "x" }, machineVersion: 1,
  });
  return { tasks, runs, task, run };
}

describe("the SQLite store", () => {
  it("joins nested transactions into the outer one, and a failure anywhere rolls all of it back", async () => {
    const { db } = await freshDb();
    const { runs } = seed(db);
    const lines = () => runs.logsAfter("run_1", 0, 100).map((l) => l.text);
    expect(() =>
      db.transaction(() => {
        runs.appendLogs("run_1", [{ time: 2, stream: "system", text: "outer" }]);
        db.transaction(() => runs.appendLogs("run_1", [{ time: 3, stream: "system", text: "inner" }]));
        throw new Error("boom");
      }),
    ).toThrow("boom");
    expect(lines()).toEqual([]);
    // A nested failure takes the outer writes with it, and the connection is usable after.
    expect(() =>
      db.transaction(() => {
        runs.appendLogs("run_1", [{ time: 2, stream: "system", text: "outer" }]);
        db.transaction(() => {
          throw new Error("inner boom");
        });
      }),
    ).toThrow("inner boom");
    expect(lines()).toEqual([]);
    expect(db.transaction(() => (runs.appendLogs("run_1", [{ time: 4, stream: "system", text: "kept" }]), db.transaction(() => 7)))).toBe(7);
    expect(lines()).toEqual(["kept"]);
    db.close();
  });

  it("opens in WAL with synchronous=NORMAL and applies every migration once", async () => {
    const { db, path } = await freshDb();
    expect(db.driver).toBe("better-sqlite3");
    expect(String(db.pragma("journal_mode"))).toBe("wal");
    expect(Number(db.pragma("synchronous"))).toBe(1);
    db.close();
    const again = await openDatabase(path);
    const rows = again.prepare<{ version: number }>("SELECT version FROM schema_migrations").all();
    expect(rows.map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version));
    again.close();
  });

  it("refuses a database written by a newer paddock", async () => {
    const { db, path } = await freshDb();
    db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)").run();
    db.close();
    await expect(openDatabase(path)).rejects.toThrow(/schema version 999 is newer/);
  });

  it("numbers tasks and runs per daemon and per task", async () => {
    const { db } = await freshDb();
    const { tasks, runs, task } = seed(db);
    expect(task.taskNumber).toBe(1);
    expect(tasks.create({ ...task, id: "task_2" }).taskNumber).toBe(2);
    const second = runs.create({ ...runs.get("run_1")!, id: "run_2", idempotencyKey: "k", snapshot: {} });
    expect(second.runNumber).toBe(2);
    // create() gives the row as a read would, without reading it back.
    expect(second).toEqual(runs.get("run_2"));
    const third = runs.create({ ...runs.get("run_1")!, id: "run_4", snapshot: {}, phaseTimings: [{ phase: "queued", start: 1, end: null }], handoff: { uploadId: "u" }, limits: { cpus: 2 }, priority: 5, openPullRequest: true, image: "i" });
    expect(third).toEqual(runs.get("run_4"));
    expect(runs.byIdempotencyKey(task.id, "k")?.id).toBe("run_2");
    expect(() => runs.create({ ...runs.get("run_1")!, id: "run_3", idempotencyKey: "k", snapshot: {} })).toThrow(/UNIQUE/);
    expect(runs.list({ team: "default", taskId: task.id }, Number.MAX_SAFE_INTEGER, 10).map((r) => r.id)).toEqual(["run_4", "run_2", "run_1"]);
    expect(runs.list({ team: "default", status: "completed" }, Number.MAX_SAFE_INTEGER, 10)).toEqual([]);
  });

  it("appends log lines with gapless seqs and moves the runner cursor in the same transaction", async () => {
    const { db } = await freshDb();
    const { runs } = seed(db);
    runs.appendLogs("run_1", [{ time: 1, stream: "system", text: "a" }]);
    const stored = runs.appendLogs("run_1", [{ time: 2, stream: "stdout", text: "b" }, { time: 3, stream: "stderr", text: "c" }], 2);
    expect(stored.map((l) => l.seq)).toEqual([2, 3]);
    expect(runs.runnerCursor("run_1")).toBe(2);
    expect(runs.logsAfter("run_1", 1, 10).map((l) => l.text)).toEqual(["b", "c"]);
    // A failure inside the batch stores none of it and leaves the cursor where it was.
    expect(() => runs.appendLogs("run_1", [{ time: 4, stream: "stdout", text: "d" }, { time: 5, stream: "stdout", text: null as unknown as string }], 9)).toThrow();
    expect(runs.logsAfter("run_1", 0, 10)).toHaveLength(3);
    expect(runs.runnerCursor("run_1")).toBe(2);
  });

  it("writes a transition and its snapshot together, and lists only runs not yet cleaned as live", async () => {
    const { db } = await freshDb();
    const { runs } = seed(db);
    expect(runs.live().map((r) => r.id)).toEqual(["run_1"]);
    runs.transition("run_1", {
      status: "in_progress", phase: "running", errorMessage: "", exitCode: null, startedAt: 2, finishedAt: null, cleanedAt: null, updatedAt: 3,
      awaitingInput: false, snapshotJson: JSON.stringify({ value: { active: "running" } }), machineVersion: 1,
    });
    expect(runs.live()).toMatchObject([{ id: "run_1", phase: "running", startedAt: 2, snapshot: { value: { active: "running" } } }]);
    runs.transition("run_1", {
      status: "completed", phase: "cleaned", errorMessage: "", exitCode: 0, startedAt: 2, finishedAt: 3, cleanedAt: 4, updatedAt: 4,
      awaitingInput: false, snapshotJson: JSON.stringify({ value: "cleaned", context: { outcome: "completed" } }), machineVersion: 1,
    });
    expect(runs.get("run_1")).toMatchObject({ phase: "cleaned", cleanedAt: 4 });
    expect(db.prepare<{ snapshot: string }>("SELECT snapshot FROM runs WHERE id = 'run_1'").get()!.snapshot).toContain('"cleaned"');
    expect(runs.live()).toEqual([]);
  });

  it("keeps the run counts (for metrics) equal to the rows, from the migration's backfill on; phase timings ride with transitions", async () => {
    const dir = tempDir("store");
    dirs.push(dir);
    const path = join(dir, "paddock.db");
    // An install from before the counts: one run already stored when migration 13 runs.
    const first = await openSqliteFile(path);
    migrate(first, 12);
    createTasksRepository(first).create({ team: "default", environmentId: "", id: "task_1", title: "t", description: "", repository: "/r", repositoryUrl: "/r", origin: "test", createdAt: 1 });
    first.exec(`INSERT INTO runs (id, team, environment_id, task_id, run_number, status, phase, provider, branch, result_branch, agent_command, limits, deadline_at, created_at, updated_at, snapshot, machine_version)
      VALUES ('run_1', 'default', '', 'task_1', 1, 'queued', 'queued', 'local', '', '', '[]', '{}', 10, 1, 1, '{}', 1)`);
    migrate(first);
    const runs = createRunsRepository(first);
    const grouped = () => first.prepare<{ status: string; provider: string; count: number }>("SELECT status, provider, count(*) AS count FROM runs GROUP BY status, provider ORDER BY 1, 2").all();
    const counted = () => [...runs.countByStatus()].sort((a, b) => a.status.localeCompare(b.status) || a.provider.localeCompare(b.provider));
    expect(counted()).toEqual([{ status: "queued", provider: "local", count: 1 }]);
    runs.create({
      team: "default", environmentId: "", networkPolicyEnforced: false, agentIsolated: false, id: "run_2", taskId: "task_1", status: "queued", phase: "queued", provider: "docker", branch: "", resultBranch: "",
      agentCommand: ["true"], limits: {}, idempotencyKey: null, deadlineAt: 10, createdAt: 1, updatedAt: 1, snapshot: {}, machineVersion: 1, phaseTimings: [{ phase: "queued", start: 1, end: null }],
    });
    const t = { errorMessage: "", exitCode: null, startedAt: 2, finishedAt: null, cleanedAt: null, updatedAt: 3, awaitingInput: false, snapshotJson: "{}", machineVersion: 1 };
    runs.transition("run_1", { ...t, status: "in_progress", phase: "running" });
    runs.transition("run_1", { ...t, status: "in_progress", phase: "running" }); // no status change: no count change
    runs.transition("run_2", { ...t, status: "failed", phase: "cleaned", phaseTimings: [{ phase: "queued", start: 1, end: 2 }, { phase: "cleanup", start: 2, end: 3 }] });
    expect(counted()).toEqual(grouped());
    expect(counted()).toEqual([{ status: "failed", provider: "docker", count: 1 }, { status: "in_progress", provider: "local", count: 1 }]);
    // A transition without timings leaves the stored ones.
    expect(runs.get("run_2")!.phaseTimings).toEqual([{ phase: "queued", start: 1, end: 2 }, { phase: "cleanup", start: 2, end: 3 }]);
    runs.transition("run_2", { ...t, status: "failed", phase: "cleaned" });
    expect(runs.get("run_2")!.phaseTimings).toHaveLength(2);
    expect(runs.get("run_1")!.phaseTimings).toEqual([]);
    first.close();
  });
});
