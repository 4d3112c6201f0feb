import type { Database } from "./database.js";

export interface EgressAuditRow {
  host: string;
  port: number;
  verdict: "allowed" | "refused";
  count: number;
  firstAt: number;
  lastAt: number;
}

export interface BrokeredUseRow {
  host: string;
  port: number;
  secretName: string;
  count: number;
  firstAt: number;
  lastAt: number;
}

export function createEgressAuditRepository(db: Database) {
  const upsert = db.prepare(`INSERT INTO egress_audit (run_id, host, port, verdict, count, first_at, last_at) VALUES (?, ?, ?, ?, 1, ?, ?)
    ON CONFLICT (run_id, host, port, verdict) DO UPDATE SET count = count + 1, last_at = excluded.last_at`);
  const of = db.prepare<{ host: string; port: number; verdict: "allowed" | "refused"; count: number; first_at: number; last_at: number }>(
    "SELECT host, port, verdict, count, first_at, last_at FROM egress_audit WHERE run_id = ? ORDER BY first_at, host, port",
  );
  const upsertBrokered = db.prepare(`INSERT INTO egress_brokered (run_id, host, port, secret_name, count, first_at, last_at) VALUES (?, ?, ?, ?, 1, ?, ?)
    ON CONFLICT (run_id, host, port, secret_name) DO UPDATE SET count = count + 1, last_at = excluded.last_at`);
  const brokeredOf = db.prepare<{ host: string; port: number; secret_name: string; count: number; first_at: number; last_at: number }>(
    "SELECT host, port, secret_name, count, first_at, last_at FROM egress_brokered WHERE run_id = ? ORDER BY first_at, host, port, secret_name",
  );
  return {
    /** One request the proxy added the secret `secretName` to (its name only, never its value). */
    recordBrokered(runId: string, host: string, port: number, secretName: string): void {
      const now = Date.now();
      upsertBrokered.run([runId, host.toLowerCase(), port, secretName, now, now]);
    },
    brokered(runId: string): BrokeredUseRow[] {
      return brokeredOf.all([runId]).map((r) => ({ host: r.host, port: r.port, secretName: r.secret_name, count: r.count, firstAt: r.first_at, lastAt: r.last_at }));
    },
    record(runId: string, host: string, port: number, verdict: "allowed" | "refused"): void {
      const now = Date.now();
      upsert.run([runId, host.toLowerCase(), port, verdict, now, now]);
    },
    list(runId: string): EgressAuditRow[] {
      return of.all([runId]).map((r) => ({ host: r.host, port: r.port, verdict: r.verdict, count: r.count, firstAt: r.first_at, lastAt: r.last_at }));
    },
  };
}
export type EgressAuditRepository = ReturnType<typeof createEgressAuditRepository>;
