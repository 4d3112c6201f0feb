import { describe, expect, it } from "vitest";
import { createMetrics } from "./metrics.js";

describe("metrics", () => {
  it("keeps what is observed before prom-client is loaded, in order, and counts on after it", async () => {
    const m = createMetrics({ runCounts: () => [{ status: "queued", provider: "local", count: 2 }], queueDepth: () => 2 });
    // Observed synchronously, before any scrape loaded the registry.
    m.egressDecision("allowed");
    m.egressDecision("refused");
    m.reaped?.(3);
    m.phaseEnded?.("run_1", "local", "queued", 1500);
    const first = (await m.scrape()).body;
    expect(first).toMatch(/paddock_egress_decisions_total\{verdict="allowed"\} 1/);
    expect(first).toMatch(/paddock_egress_decisions_total\{verdict="refused"\} 1/);
    expect(first).toMatch(/paddock_reaper_removals_total 3/);
    expect(first).toMatch(/paddock_run_phase_duration_seconds_count\{provider="local",phase="queued"\} 1/);
    expect(first).toMatch(/paddock_runs\{status="queued",provider="local"\} 2/);
    m.egressDecision("allowed");
    expect((await m.scrape()).body).toMatch(/paddock_egress_decisions_total\{verdict="allowed"\} 2/);
  });
});
