import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { durationMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { rmSync } from "node:fs";
import { join } from "node:path";
import pino from "pino";
import { describe, expect } from "vitest";
import { listen } from "../src/api/listener.js";
import { createMetrics } from "../src/api/metrics.js";
import { withPlainEndpoints } from "../src/api/plain-endpoints.js";
import { createReadiness } from "../src/api/readiness.js";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { probeWritable } from "../src/store/meta.js";
import { openDatabase } from "../src/store/open-database.js";
import { bearer, tempDir, test, watchToEnd, type Daemon } from "./fixtures.js";

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The Prometheus text format's samples (comments and blank lines skipped). */
function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const hit = samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return hit?.value;
}

describe("plain HTTP endpoints on the API port", () => {
  test("/healthz and /readyz answer without a token; /metrics counts a local run by status, phase and events", async ({ daemon, repo }) => {
    const health = await fetch(`${daemon.url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.text()).toBe("ok\n");
    const ready = await fetch(`${daemon.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: "ready" });
    expect((await fetch(`${daemon.url}/metrics`, { method: "POST" })).status).toBe(405);

    const before = parseMetrics(await (await fetch(`${daemon.url}/metrics`)).text());
    expect(value(before, "paddock_run_queue_depth")).toBe(0);
    expect(value(before, "paddock_reaper_removals_total")).toBe(0);
    expect(value(before, "paddock_runs", { status: "completed" })).toBeUndefined();

    const { task } = await daemon.tasks.createTask({ title: "metrics", repository: repo, origin: "test" });
    const { run } = await daemon.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", "echo one; echo two"] });
    const final = (await watchToEnd(daemon, run!.id)).pop()!;
    expect(final.status).toBe(RunStatus.COMPLETED);

    const res = await fetch(`${daemon.url}/metrics`);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const after = parseMetrics(await res.text());
    expect(value(after, "paddock_runs", { status: "completed", provider: "local" })).toBe(1);
    for (const phase of ["queued", "provisioning", "running", "cleanup"]) {
      expect(value(after, "paddock_run_phase_duration_seconds_count", { provider: "local", phase }), phase).toBe(1);
    }
    // No setup script: no setup phase.
    expect(value(after, "paddock_run_phase_duration_seconds_count", { provider: "local", phase: "setup" })).toBeUndefined();
    expect(value(after, "paddock_run_events_ingested_total", { kind: "log" })).toBeGreaterThanOrEqual(2);
    const timings = (await daemon.runs.getRun({ runId: run!.id })).run!.phaseTimings;
    expect(timings.map((t) => t.phase)).toEqual(["queued", "provisioning", "running", "cleanup"]);
  });

  test("a run with a setup script has five phases, back to back, on GetRun and in the histogram; a failed provisioning counts a sandbox error", async ({ daemon, repo }) => {
    const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", interceptors: [bearer(daemon.adminToken)] }));
    const { environment } = await envs.createEnvironment({
      environment: { name: "with-setup", networkAccess: NetworkAccess.FULL, setupNetworkAccess: NetworkAccess.FULL, setupScript: "echo setting up; echo still setting up" },
    });
    const { task } = await daemon.tasks.createTask({ title: "phases", repository: repo, origin: "test", environmentId: environment!.id });
    const { run } = await daemon.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", "echo agent at work"] });
    expect((await watchToEnd(daemon, run!.id)).pop()!.status).toBe(RunStatus.COMPLETED);

    const got = (await daemon.runs.getRun({ runId: run!.id })).run!;
    expect(got.phaseTimings.map((t) => t.phase)).toEqual(["queued", "provisioning", "setup", "running", "cleanup"]);
    let end = timestampMs(got.createTime!);
    for (const t of got.phaseTimings) {
      // Each phase begins where the one before ended; none is still open.
      expect(timestampMs(t.startTime!), t.phase).toBe(end);
      expect(t.duration, t.phase).toBeDefined();
      end = timestampMs(t.startTime!) + durationMs(t.duration!);
    }
    expect(end).toBe(timestampMs(got.cleanedAt!));

    const samples = await scrape(daemon);
    for (const phase of ["queued", "provisioning", "setup", "running", "cleanup"]) {
      expect(value(samples, "paddock_run_phase_duration_seconds_count", { provider: "local", phase }), phase).toBe(1);
    }
    expect(value(samples, "paddock_sandbox_errors_total", { provider: "local", operation: "provision" })).toBeUndefined();

    // The repository is gone before the next run: its checkout fails, and that is a sandbox error.
    rmSync(repo, { recursive: true, force: true });
    const { run: failing } = await daemon.runs.startRun({ taskId: task!.id, agentCommand: ["true"] });
    expect((await watchToEnd(daemon, failing!.id)).pop()!.status).toBe(RunStatus.FAILED);
    const afterFailure = await scrape(daemon);
    expect(value(afterFailure, "paddock_sandbox_errors_total", { provider: "local", operation: "provision" })).toBe(1);
    expect(value(afterFailure, "paddock_runs", { status: "failed", provider: "local" })).toBe(1);
    const failed = (await daemon.runs.getRun({ runId: failing!.id })).run!;
    expect(failed.phaseTimings.map((t) => t.phase)).toEqual(["queued", "provisioning", "cleanup"]);
  });
});

async function scrape(daemon: Daemon): Promise<Sample[]> {
  return parseMetrics(await (await fetch(`${daemon.url}/metrics`)).text());
}

describe("/readyz", () => {
  test("says 503 naming the store when the database is closed, and naming a provider not yet initialised", async ({ onTestFinished }) => {
    const dir = tempDir("readyz");
    const open = await openDatabase(join(dir, "paddock.db"));
    const pending = new Set(["docker"]);
    const readiness = createReadiness({ store: () => probeWritable(open), uninitialisedProviders: () => [...pending] }, pino({ level: "silent" }));
    const metrics = createMetrics({ runCounts: () => [], queueDepth: () => 0 });
    const notFound = (_req: unknown, res: { writeHead(s: number): void; end(): void }) => {
      res.writeHead(404);
      res.end();
    };
    const handler = withPlainEndpoints(notFound, { metrics, readiness, logger: pino({ level: "silent" }) });
    const listener = await listen({ tcp: handler, unix: handler }, { host: "127.0.0.1", port: 0 });
    onTestFinished(async () => {
      await listener.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const base = `http://127.0.0.1:${listener.port}`;
    const url = `${base}/readyz`;

    let res = await fetch(url);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ status: "not ready", failed: [{ check: "provider:docker", reason: "sandbox provider docker is not initialised" }] });

    pending.clear();
    expect((await fetch(url)).status).toBe(200);

    open.close();
    res = await fetch(url);
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ status: "not ready", failed: [{ check: "store", reason: "the database does not take writes" }] });
    // The probe endpoints never swallow the API's paths.
    expect((await fetch(`${base}/paddock.v1.TaskService/ListTasks`)).status).toBe(404);
  });
});
