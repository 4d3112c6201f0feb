import type { Counter, Histogram, Registry } from "prom-client";
import type { RunObserver } from "../runs/run-manager.js";
import type { EgressVerdict } from "../sandbox/egress-proxy.js";

export interface MetricsSources {
  /** Stored runs per status and provider, read at each scrape. */
  runCounts(): { status: string; provider: string; count: number }[];
  /** Runs waiting for a slot now. */
  queueDepth(): number;
}

export interface Metrics extends RunObserver {
  egressDecision(verdict: EgressVerdict): void;
  /** The text exposition format, and its content type. */
  scrape(): Promise<{ contentType: string; body: string }>;
}

// From a queue wait of a fraction of a second to a run of a whole day.
const PHASE_BUCKETS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 12 * 3600, 24 * 3600];

/**
 * The daemon's Prometheus metrics, in a registry of its own (two daemons in one process,
 * as in tests, do not share counters). Gauges are read from their sources at scrape time;
 * counters and histograms are fed by RunManager's observer and the egress proxy's audit.
 *
 * prom-client is loaded at the first scrape or the first observation, not at start: an idle
 * daemon nobody scrapes does not carry it. Observations made while it loads are kept, in
 * order, and applied once it is there.
 */
export function createMetrics(sources: MetricsSources): Metrics {
  let made: Made | null = null;
  let loading: Promise<Made> | null = null;
  let pending: ((m: Made) => void)[] = [];
  const load = (): Promise<Made> =>
    (loading ??= import("prom-client").then((prom) => {
      made = makeMetrics(prom, sources);
      for (const apply of pending) apply(made);
      pending = [];
      return made;
    }));
  /** Applies the observation now, or once prom-client is loaded. */
  const record = (apply: (m: Made) => void): void => {
    if (made) return apply(made);
    pending.push(apply);
    void load();
  };
  return {
    phaseEnded(_runId, provider, phase, ms) {
      record((m) => m.phases.observe({ provider, phase }, ms / 1000));
    },
    sandboxError(provider, operation) {
      record((m) => m.sandboxErrors.inc({ provider, operation }));
    },
    snapshotLookup(provider, hit) {
      record((m) => m.snapshots.inc({ provider, result: hit ? "hit" : "miss" }));
    },
    eventsIngested(_runId, batch) {
      const byKind = new Map<string, number>();
      for (const e of batch) byKind.set(e.kind, (byKind.get(e.kind) ?? 0) + 1);
      record((m) => {
        for (const [kind, n] of byKind) m.events.inc({ kind }, n);
      });
    },
    reaped(count) {
      if (count > 0) record((m) => m.reaped.inc(count));
    },
    egressDecision(verdict) {
      record((m) => m.egress.inc({ verdict }));
    },
    async scrape() {
      const { registry } = await load();
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}

interface Made {
  registry: Registry;
  phases: Histogram<"provider" | "phase">;
  events: Counter<"kind">;
  egress: Counter<"verdict">;
  sandboxErrors: Counter<"provider" | "operation">;
  snapshots: Counter<"provider" | "result">;
  reaped: Counter;
}

function makeMetrics({ Counter, Gauge, Histogram, Registry }: typeof import("prom-client"), sources: MetricsSources): Made {
  const registry = new Registry();
  new Gauge({
    name: "paddock_runs",
    help: "Stored runs by status and provider.",
    labelNames: ["status", "provider"] as const,
    registers: [registry],
    collect() {
      // Reset first: a status no run has any more must not keep its last value.
      this.reset();
      for (const r of sources.runCounts()) this.set({ status: r.status, provider: r.provider }, r.count);
    },
  });
  new Gauge({
    name: "paddock_run_queue_depth",
    help: "Runs queued for a slot (--max-concurrent-runs).",
    registers: [registry],
    collect() {
      this.set(sources.queueDepth());
    },
  });
  const phases = new Histogram({
    name: "paddock_run_phase_duration_seconds",
    help: "Time runs spent in each phase (queued, provisioning, setup, running, cleanup), by provider.",
    labelNames: ["provider", "phase"] as const,
    buckets: PHASE_BUCKETS,
    registers: [registry],
  });
  const events = new Counter({
    name: "paddock_run_events_ingested_total",
    help: "Events (log lines, agent updates, exits…) taken from runners, by kind.",
    labelNames: ["kind"] as const,
    registers: [registry],
  });
  const egress = new Counter({
    name: "paddock_egress_decisions_total",
    help: "Connections the egress proxy allowed or refused.",
    labelNames: ["verdict"] as const,
    registers: [registry],
  });
  const sandboxErrors = new Counter({
    name: "paddock_sandbox_errors_total",
    help: "Provider operations (provision, supervise, cleanup) that failed for good, by provider.",
    labelNames: ["provider", "operation"] as const,
    registers: [registry],
  });
  const snapshots = new Counter({
    name: "paddock_snapshot_lookups_total",
    help: "Sandboxes started from a snapshot (hit) or from their base image (miss), by provider.",
    labelNames: ["provider", "result"] as const,
    registers: [registry],
  });
  const reaped = new Counter({
    name: "paddock_reaper_removals_total",
    help: "Sandboxes removed because no live run owned them.",
    registers: [registry],
  });
  return { registry, phases, events, egress, sandboxErrors, snapshots, reaped };
}
