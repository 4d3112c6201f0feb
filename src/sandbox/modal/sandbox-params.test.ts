import { describe, expect, it } from "vitest";
import type { SandboxSpec } from "../provider.js";
import { sandboxParams } from "./sandbox-params.js";

const spec: SandboxSpec = {
  runId: "run_abc",
  name: "paddock-run_abc-1",
  repositoryUrl: "/repo",
  branch: "",
  resultBranch: "paddock/run_abc",
  agentCommand: ["sh", "-c", "true"],
  prompt: "do it",
  publicKeyPem: "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----",
  token: "secret-token",
  network: null,
  logBudget: { maxBytes: 1024 ** 2, maxLines: 1000 },
  limits: {},
  deadlineAt: 1_000_000 + 3_600_000,
};
const base = { instanceId: "inst1", graceMs: 10_000, cpus: 2, memoryBytes: 4 * 1024 ** 3, network: { allowedDomains: null, describe: "open" }, snapshotId: "", exitSnapshots: false, now: 1_000_000 };

describe("sandboxParams", () => {
  it("names, tags, lifetime, limits, port and the runner's environment, without the token", () => {
    const p = sandboxParams(spec, base);
    expect(p).toMatchObject({ name: "paddock-run_abc-1", command: ["paddock", "agent"], cpu: 2, memoryMiB: 4096, encryptedPorts: [47821] });
    expect(p.tags).toEqual({ "paddock.instance": "inst1", "paddock.run": "run_abc", "paddock.sandbox": "paddock-run_abc-1" });
    expect(p.timeoutMs).toBe(3_600_000 + 10_000 + 15 * 60_000);
    expect(p.timeoutMs! % 1000).toBe(0);
    expect(p.env).toMatchObject({ PADDOCK_RUN_ID: "run_abc", PADDOCK_IMPORT: "1", PADDOCK_STATE_DIR: "/paddock/state/run_abc", PADDOCK_WORKDIR: "/workspace", PADDOCK_AGENT_UID: "1000", PADDOCK_HOLD: "1" });
    expect(JSON.stringify(p)).not.toContain("secret-token");
    expect(p.outboundDomainAllowlist).toBeUndefined();
    expect(p.experimentalOptions).toBeUndefined();
  });

  it("the run's limits win; the lifetime is capped at Modal's 24 h and rounded to seconds", () => {
    const p = sandboxParams({ ...spec, limits: { cpus: 0.5, memoryBytes: 1536 * 1024 ** 2 }, deadlineAt: base.now + 48 * 3_600_000 }, { ...base, graceMs: 1234 });
    expect(p).toMatchObject({ cpu: 0.5, memoryMiB: 1536, timeoutMs: 24 * 3_600_000 });
  });

  it("an allowlist closes CIDRs; a snapshot start is tagged; exit snapshots are asked for when on", () => {
    const p = sandboxParams(spec, { ...base, network: { allowedDomains: ["github.com"], describe: "" }, snapshotId: "snap_1", exitSnapshots: true });
    expect(p).toMatchObject({ outboundDomainAllowlist: ["github.com"], outboundCidrAllowlist: [], experimentalOptions: { enable_exit_snapshot: true } });
    expect(p.tags!["paddock.snapshot"]).toBe("snap_1");
  });
});
