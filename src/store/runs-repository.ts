import type { Database } from "./database.js";
import type { AgentKindName, LogLine, PhaseSpan, RunHandoff, NewRunEvent, PermissionPolicyName, RunEventKind, RunEventRow, RunLimits, RunModeName, RunRecord, RunStatusName } from "./records.js";

interface RunRow {
  seq: number;
  id: string;
  team: string;
  environment_id: string;
  network_policy_enforced: number;
  agent_isolated: number;
  task_id: string;
  run_number: number;
  status: string;
  phase: string;
  provider: string;
  error_message: string;
  exit_code: number | null;
  branch: string;
  result_branch: string;
  result_commit: string;
  agent_command: string;
  agent_kind: string;
  awaiting_input: number;
  run_mode: string;
  permission_policy: string;
  limits: string;
  image: string;
  idempotency_key: string | null;
  deadline_at: number;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  updated_at: number;
  cleaned_at: number | null;
  machine_version: number;
  runner_cursor: number;
  priority: number;
  open_pull_request: number;
  pull_request_url: string;
  pull_request_number: number;
  phase_timings: string;
  handoff: string;
}

const toRun = (r: RunRow): RunRecord & { seq: number } => ({
  seq: r.seq,
  id: r.id,
  team: r.team,
  environmentId: r.environment_id,
  networkPolicyEnforced: r.network_policy_enforced === 1,
  agentIsolated: r.agent_isolated === 1,
  taskId: r.task_id,
  runNumber: r.run_number,
  status: r.status as RunStatusName,
  phase: r.phase,
  provider: r.provider,
  errorMessage: r.error_message,
  exitCode: r.exit_code,
  branch: r.branch,
  resultBranch: r.result_branch,
  resultCommit: r.result_commit,
  agentCommand: JSON.parse(r.agent_command) as string[],
  agentKind: r.agent_kind as AgentKindName,
  awaitingInput: r.awaiting_input === 1,
  runMode: r.run_mode as RunModeName,
  permissionPolicy: r.permission_policy as PermissionPolicyName,
  limits: JSON.parse(r.limits) as RunLimits,
  image: r.image,
  idempotencyKey: r.idempotency_key,
  deadlineAt: r.deadline_at,
  createdAt: r.created_at,
  startedAt: r.started_at,
  finishedAt: r.finished_at,
  updatedAt: r.updated_at,
  cleanedAt: r.cleaned_at,
  machineVersion: r.machine_version,
  runnerCursor: r.runner_cursor,
  priority: r.priority,
  /** Set by the run manager while the run is queued (1 = next); 0 otherwise. */
  queuePosition: 0,
  openPullRequest: r.open_pull_request === 1,
  pullRequestUrl: r.pull_request_url,
  pullRequestNumber: r.pull_request_number,
  phaseTimings: JSON.parse(r.phase_timings) as PhaseSpan[],
  handoff: JSON.parse(r.handoff) as RunHandoff,
});

export type StoredRun = ReturnType<typeof toRun>;

/** What a machine transition changes on the run row, written with its snapshot. */
export interface RunTransition {
  status: RunStatusName;
  phase: string;
  errorMessage: string;
  exitCode: number | null;
  startedAt: number | null;
  finishedAt: number | null;
  cleanedAt: number | null;
  updatedAt: number;
  /** An interactive run between turns. */
  awaitingInput: boolean;
  /** Absent: the stored timings stay. */
  phaseTimings?: PhaseSpan[];
  /** The XState persisted snapshot, already serialised. */
  snapshotJson: string;
  machineVersion: number;
}

export interface RunFilter {
  team: string;
  taskId?: string;
  status?: RunStatusName;
}

/** Every column but the snapshot: reads for clients never need it, restores do. */
const COLUMNS = `seq, id, team, environment_id, network_policy_enforced, agent_isolated, task_id, run_number, status, phase, provider, error_message, exit_code, branch, result_branch,
  result_commit, agent_command, agent_kind, awaiting_input, run_mode, permission_policy, limits, image, idempotency_key, deadline_at, created_at, started_at, finished_at, updated_at,
  cleaned_at, machine_version, runner_cursor, priority, open_pull_request, pull_request_url, pull_request_number, phase_timings, handoff`;

/** What create() takes: the run as StartRun made it. */
export type NewRun = Omit<RunRecord, "runNumber" | "exitCode" | "resultCommit" | "errorMessage" | "startedAt" | "finishedAt" | "cleanedAt" | "runnerCursor" | "image" | "agentKind" | "runMode" | "permissionPolicy" | "awaitingInput" | "handoff" | "priority" | "queuePosition" | "openPullRequest" | "pullRequestUrl" | "pullRequestNumber" | "phaseTimings"> & {
  openPullRequest?: boolean;
  phaseTimings?: PhaseSpan[];
  snapshot: unknown;
  /** The snapshot already serialised (the run manager has it): not serialised again. */
  snapshotJson?: string;
  handoff?: RunHandoff;
  image?: string;
  agentKind?: AgentKindName;
  runMode?: RunModeName;
  permissionPolicy?: PermissionPolicyName;
  priority?: number;
};

/** The row of a new run as toRun would read it back, without reading it (fresh copies of its lists). */
function createdRow(run: NewRun, runNumber: number, seq: number): StoredRun {
  return {
    seq,
    id: run.id,
    team: run.team,
    environmentId: run.environmentId,
    networkPolicyEnforced: run.networkPolicyEnforced,
    agentIsolated: run.agentIsolated,
    taskId: run.taskId,
    runNumber,
    status: run.status,
    phase: run.phase,
    provider: run.provider,
    errorMessage: "",
    exitCode: null,
    branch: run.branch,
    resultBranch: run.resultBranch,
    resultCommit: "",
    agentCommand: [...run.agentCommand],
    agentKind: run.agentKind ?? "command",
    awaitingInput: false,
    runMode: run.runMode ?? "background",
    permissionPolicy: run.permissionPolicy ?? "auto_allow",
    limits: { ...run.limits },
    image: run.image ?? "",
    idempotencyKey: run.idempotencyKey,
    deadlineAt: run.deadlineAt,
    createdAt: run.createdAt,
    startedAt: null,
    finishedAt: null,
    updatedAt: run.updatedAt,
    cleanedAt: null,
    machineVersion: run.machineVersion,
    runnerCursor: 0,
    priority: run.priority ?? 0,
    queuePosition: 0,
    openPullRequest: !!run.openPullRequest,
    pullRequestUrl: "",
    pullRequestNumber: 0,
    phaseTimings: (run.phaseTimings ?? []).map((p) => ({ ...p })),
    handoff: { ...(run.handoff ?? {}) },
  };
}

export function createRunsRepository(db: Database) {
  const insert = db.prepare(`INSERT INTO runs (id, team, environment_id, network_policy_enforced, agent_isolated, task_id, run_number, status, phase, provider, branch, result_branch,
      agent_command, agent_kind, run_mode, permission_policy, limits, image, idempotency_key, deadline_at, created_at, updated_at, snapshot, machine_version, priority, open_pull_request, phase_timings, handoff)
    VALUES (${Array(28).fill("?").join(", ")})`);
  // Not max(run_number): SQLite answers that by reading every run of the task; this reads one index entry.
  const nextNumber = db.prepare<{ n: number }>(
    "SELECT coalesce((SELECT run_number FROM runs WHERE task_id = ? ORDER BY run_number DESC LIMIT 1), 0) + 1 AS n",
  );
  const byId = db.prepare<RunRow>(`SELECT ${COLUMNS} FROM runs WHERE id = ?`);
  const byKey = db.prepare<RunRow>(`SELECT ${COLUMNS} FROM runs WHERE task_id = ? AND idempotency_key = ?`);
  // Kept by triggers (migration 13): no scan of the runs table at every scrape.
  const counts = db.prepare<{ status: string; provider: string; count: number }>("SELECT status, provider, count FROM run_counts WHERE count > 0");
  const live = db.prepare<RunRow & { snapshot: string }>(`SELECT ${COLUMNS}, snapshot FROM runs WHERE phase <> 'cleaned' ORDER BY seq`);
  // Positional: binding by name costs a lookup per parameter, on the hottest statement.
  const transition = db.prepare(`UPDATE runs SET status = ?, phase = ?, error_message = ?, exit_code = ?, started_at = ?, finished_at = ?, cleaned_at = ?,
      updated_at = ?, awaiting_input = ?, snapshot = ?, machine_version = ?, phase_timings = coalesce(?, phase_timings)
    WHERE id = ?`);
  const result = db.prepare("UPDATE runs SET result_commit = ? WHERE id = ?");
  const pullRequest = db.prepare("UPDATE runs SET pull_request_url = ?, pull_request_number = ? WHERE id = ?");
  const lastLines = db.prepare<LogLine>(
    "SELECT seq, time, stream, text FROM run_logs WHERE run_id = ? AND kind = 'log' AND stream IN ('stdout', 'agent') ORDER BY seq DESC LIMIT ?",
  );
  const handoff = db.prepare("UPDATE runs SET handoff = ? WHERE id = ?");
  const cursor = db.prepare("UPDATE runs SET runner_cursor = ? WHERE id = ?");
  const cursorOf = db.prepare<{ c: number }>("SELECT runner_cursor AS c FROM runs WHERE id = ?");
  const lastLog = db.prepare<{ s: number | null }>("SELECT max(seq) AS s FROM run_logs WHERE run_id = ?");
  const insertLog = db.prepare("INSERT INTO run_logs (run_id, seq, time, stream, text, kind, payload) VALUES (?, ?, ?, ?, ?, ?, ?)");
  // Many rows per statement: a flood's lines cost one statement step per LOG_ROWS lines.
  const LOG_ROWS = 64;
  const insertLogs = db.prepare(`INSERT INTO run_logs (run_id, seq, time, stream, text, kind, payload) VALUES ${Array(LOG_ROWS).fill("(?, ?, ?, ?, ?, ?, ?)").join(", ")}`);
  // The readable projection: every event but the agent's raw updates.
  const logsAfter = db.prepare<LogLine>(
    "SELECT seq, time, stream, text FROM run_logs WHERE run_id = ? AND seq > ? AND kind <> 'agent_update' ORDER BY seq LIMIT ?",
  );
  const eventsAfter = db.prepare<RunEventRow>(
    "SELECT seq, time, stream, text, kind, payload FROM run_logs WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
  );

  return {
    /** How many runs there are of each status and provider (for metrics). */
    countByStatus(): { status: string; provider: string; count: number }[] {
      return counts.all();
    },

    /** Inserts the run and its first log lines in one transaction. */
    create(run: NewRun, firstLines: { time: number; stream: string; text: string }[] = []): StoredRun {
      return db.transaction(() => {
        const runNumber = nextNumber.get([run.taskId])!.n;
        // Positional, in the column order above.
        const { lastInsertRowid } = insert.run([
          run.id,
          run.team,
          run.environmentId,
          run.networkPolicyEnforced ? 1 : 0,
          run.agentIsolated ? 1 : 0,
          run.taskId,
          runNumber,
          run.status,
          run.phase,
          run.provider,
          run.branch,
          run.resultBranch,
          JSON.stringify(run.agentCommand),
          run.agentKind ?? "command",
          run.runMode ?? "background",
          run.permissionPolicy ?? "auto_allow",
          JSON.stringify(run.limits),
          run.image ?? "",
          run.idempotencyKey,
          run.deadlineAt,
          run.createdAt,
          run.updatedAt,
          run.snapshotJson ?? JSON.stringify(run.snapshot),
          run.machineVersion,
          run.priority ?? 0,
          run.openPullRequest ? 1 : 0,
          JSON.stringify(run.phaseTimings ?? []),
          JSON.stringify(run.handoff ?? {}),
        ]);
        firstLines.forEach((l, i) => insertLog.run([run.id, i + 1, l.time, l.stream, l.text, "log", null]));
        return createdRow(run, runNumber, Number(lastInsertRowid));
      });
    },
    /** The row create() will make, before it is made: its run number and seq are 0 until then. */
    draft(run: NewRun): StoredRun {
      return createdRow(run, 0, 0);
    },
    get(id: string): StoredRun | undefined {
      const row = byId.get([id]);
      return row && toRun(row);
    },
    byIdempotencyKey(taskId: string, key: string): StoredRun | undefined {
      const row = byKey.get([taskId, key]);
      return row && toRun(row);
    },
    /** Newest first, seq below `before`. */
    list(filter: RunFilter, before: number, limit: number): StoredRun[] {
      const where = ["team = ?", "seq < ?"];
      const params: (string | number)[] = [filter.team, before];
      if (filter.taskId) {
        where.push("task_id = ?");
        params.push(filter.taskId);
      }
      if (filter.status) {
        where.push("status = ?");
        params.push(filter.status);
      }
      params.push(limit);
      return db
        .prepare<RunRow>(`SELECT ${COLUMNS} FROM runs WHERE ${where.join(" AND ")} ORDER BY seq DESC LIMIT ?`)
        .all(params)
        .map(toRun);
    },
    /** Every run that has not reached `cleaned`, oldest first: what a restart must restore. */
    live(): (StoredRun & { snapshot: unknown })[] {
      return live.all().map((r) => ({ ...toRun(r), snapshot: JSON.parse(r.snapshot) as unknown }));
    },
    transition(id: string, t: RunTransition): void {
      transition.run([
        t.status,
        t.phase,
        t.errorMessage,
        t.exitCode,
        t.startedAt,
        t.finishedAt,
        t.cleanedAt,
        t.updatedAt,
        t.awaitingInput ? 1 : 0,
        t.snapshotJson,
        t.machineVersion,
        t.phaseTimings ? JSON.stringify(t.phaseTimings) : null,
        id,
      ]);
    },
    /** Several writes of this repository in one transaction (the run manager's group commit). */
    batch<T>(fn: () => T): T {
      return db.transaction(fn);
    },
    /** Several transitions (of one run or many) in one transaction. */
    transitionAll(batch: { id: string; transition: RunTransition }[]): void {
      db.transaction(() => {
        for (const { id, transition: t } of batch) this.transition(id, t);
      });
    },
    setResultCommit(id: string, commit: string): void {
      result.run([commit, id]);
    },
    setPullRequest(id: string, url: string, number: number): void {
      pullRequest.run([url, number, id]);
    },
    /** The agent's last output lines (stdout, or an ACP agent's messages), oldest first. */
    lastOutput(id: string, limit: number): LogLine[] {
      return lastLines.all([id, limit]).reverse();
    },
    setHandoff(id: string, h: RunHandoff): void {
      handoff.run([JSON.stringify(h), id]);
    },
    /**
     * Appends lines with the next seqs and, when given, moves the runner cursor in the
     * same transaction: a crash either stores both or neither, so nothing is lost or doubled.
     */
    appendLogs(id: string, lines: NewRunEvent[], runnerCursor?: number): LogLine[] {
      return db.transaction(() => {
        let seq = lastLog.get([id])?.s ?? 0;
        const stored: LogLine[] = [];
        let i = 0;
        for (; i + LOG_ROWS <= lines.length; i += LOG_ROWS) {
          const params: (string | number | null)[] = [];
          for (let j = i; j < i + LOG_ROWS; j++) {
            const l = lines[j]!;
            seq += 1;
            params.push(id, seq, l.time, l.stream, l.text, l.kind ?? "log", l.payload ?? null);
            stored.push({ seq, time: l.time, stream: l.stream, text: l.text });
          }
          insertLogs.run(params);
        }
        for (; i < lines.length; i++) {
          const l = lines[i]!;
          seq += 1;
          insertLog.run([id, seq, l.time, l.stream, l.text, l.kind ?? "log", l.payload ?? null]);
          stored.push({ seq, time: l.time, stream: l.stream, text: l.text });
        }
        if (runnerCursor !== undefined) cursor.run([runnerCursor, id]);
        return stored;
      });
    },
    logsAfter(id: string, afterSeq: number, limit: number): LogLine[] {
      return logsAfter.all([id, afterSeq, limit]);
    },
    /** Every event after afterSeq; `kinds` filters (in memory: the seq order is the index's). */
    eventsAfter(id: string, afterSeq: number, limit: number, kinds?: ReadonlySet<RunEventKind>): RunEventRow[] {
      const rows = eventsAfter.all([id, afterSeq, limit]);
      return kinds && kinds.size > 0 ? rows.filter((r) => kinds.has(r.kind)) : rows;
    },
    runnerCursor(id: string): number {
      return cursorOf.get([id])?.c ?? 0;
    },
  };
}
export type RunsRepository = ReturnType<typeof createRunsRepository>;
