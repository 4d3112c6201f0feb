import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { allLogs, cleanUp, makeGitRepo, sh, startDaemon, waitForPhase, watchToEnd, type Daemon } from "./fixtures.js";
import { startFakeModal, Status, type FakeModal } from "./fake-modal.js";

/**
 * The modal provider against a local fake of Modal's control plane (test/fake-modal.ts),
 * driven by the real SDK and a real daemon; each sandbox runs this worktree's dist/paddock.
 */
const ROOT = resolve(import.meta.dirname, "..");
let fake: FakeModal;

beforeAll(async () => {
  if (!existsSync(resolve(ROOT, "dist/paddock"))) execFileSync("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: "inherit" });
  process.env.MODAL_CONFIG_PATH = "/nonexistent/.modal.toml"; // never the machine's own profile
  fake = await startFakeModal({ paddockBinary: resolve(ROOT, "dist/paddock") });
}, 300_000);

afterAll(async () => {
  expect(fake.unimplemented).toEqual([]);
  await fake.close();
});

function modalDaemon(extra: Record<string, string> = {}): Promise<Daemon> {
  return startDaemon({
    config: { modalImage: "registry.test/paddock-sandbox:test", modalServerUrl: fake.url, modalTunnelCa: fake.caFile, modalTokenId: "ak-test", modalTokenSecret: "as-test", ...extra },
  });
}

async function modalTask(d: Daemon, repo: string) {
  const { task } = await d.tasks.createTask({ title: "modal task", description: "commit a file", repository: repo });
  return task!;
}

const sandboxesOf = (runId: string) => fake.running().filter((s) => s.tags["paddock.run"] === runId);

const COMMIT = ["sh", "-c", 'read -r p; echo "got: $p"; echo made > made.txt; git add made.txt; git -c user.name=a -c user.email=a@x commit -qm made; echo left > uncommitted.txt; echo bye >&2'];

describe("the modal provider", () => {
  test("create → run → logs → complete → cleaned: the work arrives on paddock/<run>, the sandbox is gone", async () => {
    const d = await modalDaemon();
    const repo = makeGitRepo();
    try {
      const task = await modalTask(d, repo);
      const { run } = await d.runs.startRun({ taskId: task.id, provider: "modal", agentCommand: COMMIT, limits: { cpus: 1.5, memoryBytes: 2n * 1024n ** 3n } });
      const seen = await watchToEnd(d, run!.id, 120_000);
      const final = seen[seen.length - 1]!;
      const lines = await allLogs(d, run!.id);
      const sbDebug = [...fake.sandboxes.values()].find((s) => s.tags["paddock.run"] === run!.id);
      expect(final, `${final.errorMessage}\n${d.logs.filter((l) => /"level":(40|50)/.test(l)).join("\n").slice(0, 3000)}\n${JSON.stringify(fake.calls)}\n${lines.map((l) => l.text).join("\n")}\n${sbDebug?.main.out[1]?.toString()}`).toMatchObject({ status: RunStatus.COMPLETED, exitCode: 0, phase: "cleaned", networkPolicyEnforced: false });
      expect(lines.find((l) => l.stream === "stdout")?.text).toBe("got: modal task");
      expect(lines.filter((l) => l.stream === "stderr").map((l) => l.text)).toEqual(["bye"]);
      expect(final.resultBranch).toBe(`paddock/${run!.id}`);
      expect(sh(repo, "git", "rev-parse", final.resultBranch)).toBe(final.resultCommit);
      expect(sh(repo, "git", "show", `${final.resultBranch}:made.txt`)).toBe("made");
      expect(sh(repo, "git", "show", `${final.resultBranch}:uncommitted.txt`)).toBe("left");
      expect(sandboxesOf(run!.id)).toEqual([]);
      const sb = [...fake.sandboxes.values()].find((s) => s.tags["paddock.run"] === run!.id)!;
      expect(sb.name).toBe(`paddock-${run!.id}-1`);
      expect(sb.tags["paddock.instance"]).toMatch(/.+/);
      expect(sb.definition.resources).toMatchObject({ milliCpu: 1500, memoryMb: 2048 });
      expect(sb.definition.timeoutSecs).toBeGreaterThan(3600);
      expect(sb.definition.openPorts.ports.map((p: { port: number }) => p.port)).toEqual([47821]);
      expect(sb.terminated).toBe(true);
    } finally {
      await cleanUp(d);
    }
  });
});
