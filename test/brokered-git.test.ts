import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect } from "vitest";
import { EnvironmentService, NetworkAccess } from "../src/gen/paddock/v1/environment_pb.js";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { BrokerCa } from "../src/sandbox/broker-ca.js";
import { allLogs, bearer, cleanUp, dockerAvailable, makeGitRepo, startDaemon, test, watchToEnd } from "./fixtures.js";

/**
 * A brokered git token in a restricted docker sandbox: git over HTTPS through the egress
 * proxy gets HTTP basic with the real token on the brokered host; the sandbox holds the
 * placeholder. The git host is an HTTPS listener of this test on loopback with a test CA's
 * certificate, reached by a made-up name through the operator's host map.
 */
const dockerUp = dockerAvailable();
const TOKEN = "ghp_brokered0123456789abcdef";

describe.runIf(dockerUp)("brokered secrets on docker", () => {
  test("git over HTTPS with a brokered token (custom policy): basic auth reaches the git host, the sandbox prints only the placeholder", { timeout: 240_000 }, async () => {
    const certs = mkdtempSync(join(tmpdir(), "paddock-git-ca-"));
    const testCa = await BrokerCa.loadOrCreate(certs, "git test");
    const caFile = join(certs, "ca.pem");
    writeFileSync(caFile, testCa.certPem);
    const leaf = await testCa.issue("git.broker.test");
    const seen: { url: string; authorization: string | undefined }[] = [];
    const git: Server = createServer({ key: leaf.keyPem, cert: leaf.certPem }, (req, res) => {
      seen.push({ url: req.url ?? "", authorization: req.headers.authorization });
      res.writeHead(404).end("no such repository\n");
    });
    await new Promise<void>((r) => git.listen(0, "127.0.0.1", r));
    const port = (git.address() as AddressInfo).port;
    const repo = makeGitRepo();
    const daemon = await startDaemon({ config: { egressHostMap: "git.broker.test=127.0.0.1", egressUpstreamCa: caFile } });
    try {
      const envs = createClient(EnvironmentService, createConnectTransport({ baseUrl: daemon.url, httpVersion: "1.1", interceptors: [bearer(daemon.adminToken)] }));
      const { environment } = await envs.createEnvironment({
        environment: { name: "git", networkAccess: NetworkAccess.CUSTOM, allowedDomains: [`git.broker.test:${port}`], defaultProvider: "docker" },
        secrets: [{ name: "GIT_TOKEN", value: TOKEN, broker: { host: `git.broker.test:${port}`, basicUsername: "x-access-token" } }],
      });
      const { task } = await daemon.tasks.createTask({ title: "fetch", repository: repo, environmentId: environment!.id });
      const script = `echo "token is $GIT_TOKEN"; git ls-remote https://git.broker.test:${port}/org/repo.git 2>&1 | head -3; true`;
      const { run } = await daemon.runs.startRun({ taskId: task!.id, agentCommand: ["sh", "-c", script] });
      const final = (await watchToEnd(daemon, run!.id, 180_000)).pop()!;
      const lines = await allLogs(daemon, run!.id);
      const text = lines.map((l) => `${l.stream}: ${l.text}`).join("\n");
      expect(final.status, text).toBe(RunStatus.COMPLETED);
      expect(text).toContain("token is paddock-brokered-GIT_TOKEN");
      expect(text).not.toContain(TOKEN);
      expect(seen.length, text).toBeGreaterThan(0);
      expect(seen[0]!.url).toMatch(/^\/org\/repo\.git\/info\/refs/);
      expect(seen[0]!.authorization).toBe(`Basic ${Buffer.from(`x-access-token:${TOKEN}`).toString("base64")}`);
      const egress = await daemon.runs.listRunEgress({ runId: run!.id });
      expect(egress.brokeredUses.map((u) => [u.host, u.port, u.secretName])).toEqual([["git.broker.test", port, "GIT_TOKEN"]]);
    } finally {
      git.closeAllConnections();
      git.close();
      await cleanUp(daemon);
      rmSync(repo, { recursive: true, force: true });
      rmSync(certs, { recursive: true, force: true });
    }
  });
});
