import type { Database } from "./database.js";

/** Ordered, append-only. Never edit a migration that has shipped; add the next one. */
export const MIGRATIONS: readonly { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: "tasks, runs, run_logs",
    sql: `
      CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
      ) STRICT;

      -- task_number is the rowid: a per-daemon 1, 2, 3… that is never reused.
      CREATE TABLE tasks (
        task_number    INTEGER PRIMARY KEY AUTOINCREMENT,
        id             TEXT NOT NULL UNIQUE,
        title          TEXT NOT NULL,
        description    TEXT NOT NULL,
        repository     TEXT NOT NULL,
        repository_url TEXT NOT NULL,
        origin         TEXT NOT NULL,
        created_at     INTEGER NOT NULL
      ) STRICT;

      CREATE TABLE runs (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        id              TEXT NOT NULL UNIQUE,
        task_id         TEXT NOT NULL REFERENCES tasks(id),
        run_number      INTEGER NOT NULL,
        status          TEXT NOT NULL,
        phase           TEXT NOT NULL,
        provider        TEXT NOT NULL,
        error_message   TEXT NOT NULL DEFAULT '',
        exit_code       INTEGER,
        branch          TEXT NOT NULL,
        result_branch   TEXT NOT NULL,
        result_commit   TEXT NOT NULL DEFAULT '',
        agent_command   TEXT NOT NULL,
        idempotency_key TEXT,
        deadline_at     INTEGER NOT NULL,
        created_at      INTEGER NOT NULL,
        started_at      INTEGER,
        finished_at     INTEGER,
        updated_at      INTEGER NOT NULL,
        cleaned_at      INTEGER,
        -- The XState persisted snapshot and the machine version that wrote it.
        snapshot        TEXT NOT NULL,
        machine_version INTEGER NOT NULL,
        -- The last runner event seq already stored in run_logs (resume point after restart).
        runner_cursor   INTEGER NOT NULL DEFAULT 0,
        UNIQUE (task_id, run_number),
        UNIQUE (task_id, idempotency_key)
      ) STRICT;
      CREATE INDEX runs_task ON runs(task_id, seq);
      CREATE INDEX runs_live ON runs(phase) WHERE phase <> 'cleaned';

      CREATE TABLE run_logs (
        run_id TEXT NOT NULL REFERENCES runs(id),
        seq    INTEGER NOT NULL,
        time   INTEGER NOT NULL,
        stream TEXT NOT NULL,
        text   TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
      ) STRICT, WITHOUT ROWID;
    `,
  },
  {
    version: 2,
    name: "sandbox_snapshots",
    sql: `
      -- Sandbox images taken after clone (+ setup), reused by later runs of the same key.
      CREATE TABLE sandbox_snapshots (
        id           TEXT PRIMARY KEY,
        provider     TEXT NOT NULL,
        snapshot_key TEXT NOT NULL,
        repository   TEXT NOT NULL,
        commit_sha   TEXT NOT NULL DEFAULT '',
        setup_hash   TEXT NOT NULL,
        external_id  TEXT NOT NULL DEFAULT '',
        status       TEXT NOT NULL CHECK (status IN ('in_progress', 'complete', 'error')),
        error        TEXT NOT NULL DEFAULT '',
        size_bytes   INTEGER NOT NULL DEFAULT 0,
        created_at   INTEGER NOT NULL,
        last_used_at INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX sandbox_snapshots_key ON sandbox_snapshots(provider, snapshot_key, status, created_at);
    `,
  },
  {
    version: 3,
    name: "runs.limits",
    sql: `ALTER TABLE runs ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';`,
  },
  {
    version: 4,
    name: "teams and api_tokens",
    sql: `
      ALTER TABLE tasks ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
      ALTER TABLE runs ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
      CREATE INDEX tasks_team ON tasks(team, task_number);
      CREATE INDEX runs_team ON runs(team, seq);
      -- Opaque bearer tokens: only a SHA-256 of the secret is kept.
      CREATE TABLE api_tokens (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT NOT NULL UNIQUE,
        team         TEXT NOT NULL,
        name         TEXT NOT NULL,
        scopes       TEXT NOT NULL,
        secret_hash  TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        last_used_at INTEGER,
        revoked_at   INTEGER
      ) STRICT;
    `,
  },
  {
    version: 5,
    name: "environments",
    sql: `
      CREATE TABLE environments (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        id         TEXT NOT NULL UNIQUE,
        team       TEXT NOT NULL,
        name       TEXT NOT NULL,
        -- Everything but secrets, as JSON (network policy, env vars, setup, scope, defaults).
        spec       TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (team, name)
      ) STRICT;
      -- Values sealed with AES-256-GCM; the key is a file next to the database, not in it.
      CREATE TABLE environment_secrets (
        environment_id TEXT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
        name           TEXT NOT NULL,
        sealed         TEXT NOT NULL,
        setup_only     INTEGER NOT NULL,
        updated_at     INTEGER NOT NULL,
        PRIMARY KEY (environment_id, name)
      ) STRICT;
      ALTER TABLE tasks ADD COLUMN environment_id TEXT NOT NULL DEFAULT '';
      ALTER TABLE runs ADD COLUMN environment_id TEXT NOT NULL DEFAULT '';
      ALTER TABLE runs ADD COLUMN network_policy_enforced INTEGER NOT NULL DEFAULT 0;
    `,
  },
  {
    version: 6,
    name: "egress_audit",
    sql: `
      -- Every destination a sandbox asked the egress proxy for, allowed or refused.
      CREATE TABLE egress_audit (
        run_id   TEXT NOT NULL,
        host     TEXT NOT NULL,
        port     INTEGER NOT NULL,
        verdict  TEXT NOT NULL CHECK (verdict IN ('allowed', 'refused')),
        count    INTEGER NOT NULL,
        first_at INTEGER NOT NULL,
        last_at  INTEGER NOT NULL,
        PRIMARY KEY (run_id, host, port, verdict)
      ) STRICT, WITHOUT ROWID;
    `,
  },
  {
    version: 7,
    name: "instance admin",
    sql: `
      -- admin became per team; the token made on first start (the oldest row, as the
      -- daemon wrote it) keeps the instance-wide powers it had, now as instance:admin.
      UPDATE api_tokens SET scopes = '["admin","instance:admin"]'
       WHERE seq = (SELECT min(seq) FROM api_tokens)
         AND team = 'default' AND name = 'admin (made on first start)' AND scopes = '["admin"]';
    `,
  },
  {
    version: 8,
    name: "agent isolation",
    sql: `
      -- Whether the run's agent had a user of its own (earlier runs: unknown, so false).
      ALTER TABLE runs ADD COLUMN agent_isolated INTEGER NOT NULL DEFAULT 0;
    `,
  },
  {
    version: 9,
    name: "snapshot keys and run images",
    sql: `
      -- Snapshot keys now cover the base image id, paddock's version, the repository, setup
      -- and the environment; these columns say what a key was made of.
      ALTER TABLE sandbox_snapshots ADD COLUMN base_image_id TEXT NOT NULL DEFAULT '';
      ALTER TABLE sandbox_snapshots ADD COLUMN paddock_version TEXT NOT NULL DEFAULT '';
      ALTER TABLE sandbox_snapshots ADD COLUMN environment_id TEXT NOT NULL DEFAULT '';
      -- Older snapshots were keyed by repository alone and are never looked up again:
      -- marked so that garbage collection removes them and their images.
      UPDATE sandbox_snapshots SET status = 'error', error = 'made before snapshots were keyed by image and setup'
       WHERE status = 'complete';
      -- The image a run asked for (its own or its environment's); '' for the daemon's.
      ALTER TABLE runs ADD COLUMN image TEXT NOT NULL DEFAULT '';
    `,
  },
  {
    version: 10,
    name: "run events and agent kinds",
    sql: `
      -- Every event of a run in one seq space: log lines as before, and an ACP agent's
      -- updates, prompts, permission requests and resolutions, turn ends, with their JSON.
      -- text stays the readable line StreamLogs shows ('' for agent updates).
      ALTER TABLE run_logs ADD COLUMN kind TEXT NOT NULL DEFAULT 'log';
      ALTER TABLE run_logs ADD COLUMN payload TEXT;
      ALTER TABLE runs ADD COLUMN agent_kind TEXT NOT NULL DEFAULT 'command';
      ALTER TABLE runs ADD COLUMN run_mode TEXT NOT NULL DEFAULT 'background';
      ALTER TABLE runs ADD COLUMN permission_policy TEXT NOT NULL DEFAULT 'auto_allow';
      ALTER TABLE runs ADD COLUMN awaiting_input INTEGER NOT NULL DEFAULT 0;
    `,
  },
  {
    version: 11,
    name: "run priority",
    sql: `
      -- Fair admission: within a team, queued runs of higher priority are admitted first.
      ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    `,
  },
  {
    version: 12,
    name: "pull requests from runs",
    sql: `
      -- StartRun.open_pull_request, and the pull request the daemon opened from the run's branch.
      ALTER TABLE runs ADD COLUMN open_pull_request INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE runs ADD COLUMN pull_request_url TEXT NOT NULL DEFAULT '';
      ALTER TABLE runs ADD COLUMN pull_request_number INTEGER NOT NULL DEFAULT 0;
    `,
  },
  {
    version: 13,
    name: "run phase timings",
    sql: `
      -- When each phase of a run (queued, provisioning, setup, running, cleanup) began and
      -- ended, as JSON [{phase, start, end}], written with the transition that moves it on.
      -- Older runs have none.
      ALTER TABLE runs ADD COLUMN phase_timings TEXT NOT NULL DEFAULT '[]';
    `,
  },
  {
    version: 14,
    name: "run counts by status and provider",
    sql: `
      -- What the paddock_runs gauge reads at every scrape: counting the runs table instead
      -- costs a scan (240 ms with 100,000 runs, blocking the daemon). Kept by triggers, so
      -- it changes in the same transaction as the rows it counts.
      CREATE TABLE run_counts (
        status   TEXT NOT NULL,
        provider TEXT NOT NULL,
        count    INTEGER NOT NULL,
        PRIMARY KEY (status, provider)
      ) STRICT, WITHOUT ROWID;
      INSERT INTO run_counts (status, provider, count) SELECT status, provider, count(*) FROM runs GROUP BY status, provider;
      CREATE TRIGGER run_counts_insert AFTER INSERT ON runs BEGIN
        INSERT INTO run_counts (status, provider, count) VALUES (NEW.status, NEW.provider, 1)
          ON CONFLICT (status, provider) DO UPDATE SET count = count + 1;
      END;
      CREATE TRIGGER run_counts_update AFTER UPDATE OF status, provider ON runs
        WHEN OLD.status <> NEW.status OR OLD.provider <> NEW.provider BEGIN
        UPDATE run_counts SET count = count - 1 WHERE status = OLD.status AND provider = OLD.provider;
        INSERT INTO run_counts (status, provider, count) VALUES (NEW.status, NEW.provider, 1)
          ON CONFLICT (status, provider) DO UPDATE SET count = count + 1;
      END;
      CREATE TRIGGER run_counts_delete AFTER DELETE ON runs BEGIN
        UPDATE run_counts SET count = count - 1 WHERE status = OLD.status AND provider = OLD.provider;
      END;
    `,
  },
  {
    version: 15,
    name: "brokered secrets",
    sql: `
      -- A brokered secret's rule (JSON; '' for a plain secret): the sandbox holds a
      -- placeholder and the egress proxy adds the value for this destination only. The
      -- rule is also bound into the sealed value's additional data.
      ALTER TABLE environment_secrets ADD COLUMN broker TEXT NOT NULL DEFAULT '';
      -- Every request the egress proxy added a brokered secret to, by destination and name.
      CREATE TABLE egress_brokered (
        run_id      TEXT NOT NULL,
        host        TEXT NOT NULL,
        port        INTEGER NOT NULL,
        secret_name TEXT NOT NULL,
        count       INTEGER NOT NULL,
        first_at    INTEGER NOT NULL,
        last_at     INTEGER NOT NULL,
        PRIMARY KEY (run_id, host, port, secret_name)
      ) STRICT, WITHOUT ROWID;
    `,
  },
  {
    version: 16,
    name: "run handoffs",
    sql: `
      -- JSON: the upload a run started from and how its agent took the conversation back,
      -- and when and where the run was handed off. '{}' for none.
      ALTER TABLE runs ADD COLUMN handoff TEXT NOT NULL DEFAULT '{}';
    `,
  },
];

/** Brings the schema to the newest version (or to `upTo`, for tests that make an older install). */
export function migrate(db: Database, upTo = Infinity): number {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
  ) STRICT`);
  const row = db.prepare<{ v: number | null }>("SELECT max(version) AS v FROM schema_migrations").get();
  const current = row?.v ?? 0;
  const newest = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;
  if (current > newest) {
    throw new Error(
      `database schema version ${current} is newer than this paddock (${newest}); upgrade paddock or use another --data-dir`,
    );
  }
  for (const m of MIGRATIONS) {
    if (m.version <= current || m.version > upTo) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)").run([
        m.version,
        m.name,
        Date.now(),
      ]);
    });
  }
  return newest;
}
