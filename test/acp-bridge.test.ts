import { client, ndJsonStream, type ClientConnection } from "@agentclientprotocol/sdk";
import { spawn, type ChildProcess } from "node:child_process";
import { resolve } from "node:path";
import { Readable, Writable } from "node:stream";
import { describe, expect } from "vitest";
import { runnerCommand } from "../src/app.js";
import { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";
import { sh, test, watchToEnd, type Daemon } from "./fixtures.js";

/**
 * `paddock acp` as an editor drives it: the real command, spawned, spoken to with the ACP
 * SDK's client side over its stdio, against a real daemon running the scripted ACP agent.
 */
const AGENT = ["node", resolve(import.meta.dirname, "fixtures", "scripted-acp-agent.mjs")];

interface Editor {
  conn: ClientConnection;
  updates: { sessionId: string; text: string }[];
  asked: string[];
  child: ChildProcess;
  close(): Promise<void>;
}

/** An editor attached to a fresh `paddock acp`; it allows every permission it is asked. */
function editor(d: Daemon): Editor {
  const [exe, ...pre] = runnerCommand().slice(0, -1); // node + tsx + main.ts, without "agent"
  const child = spawn(exe!, [...pre, "acp", "--address", d.url, "--token", d.adminToken, "--", ...AGENT], { stdio: ["pipe", "pipe", "inherit"] });
  const updates: Editor["updates"] = [];
  const asked: string[] = [];
  const app = client({ name: "test editor" })
    .onNotification("session/update", ({ params }) => {
      const u = params.update as { sessionUpdate: string; content?: { type: string; text?: string } };
      if (u.content?.type === "text") updates.push({ sessionId: params.sessionId, text: `${u.sessionUpdate}:${u.content.text ?? ""}` });
    })
    .onRequest("session/request_permission", ({ params }) => {
      asked.push(String((params.toolCall as { title?: string }).title ?? ""));
      const allow = params.options.find((o) => o.kind.startsWith("allow"))!;
      return { outcome: { outcome: "selected" as const, optionId: allow.optionId } };
    });
  const conn = app.connect(ndJsonStream(Writable.toWeb(child.stdin!), Readable.toWeb(child.stdout!) as ReadableStream<Uint8Array>));
  return {
    conn,
    updates,
    asked,
    child,
    close: async () => {
      child.stdin!.end();
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once("exit", r)));
    },
  };
}

const said = (e: Editor, sessionId: string) => e.updates.filter((u) => u.sessionId === sessionId).map((u) => u.text).join("");

describe("paddock acp", () => {
  test("an editor starts a run, prompts it, answers its permission request, cancels a turn; another attaches and sees its history", { timeout: 120_000 }, async ({ daemon, repo }) => {
    const zed = editor(daemon);
    try {
      const init = await zed.conn.agent.request("initialize", { protocolVersion: 1, clientCapabilities: {} });
      expect(init.agentCapabilities?.loadSession).toBe(true);
      const { sessionId } = await zed.conn.agent.request("session/new", { cwd: repo, mcpServers: [] });

      // The first prompt is the task and the run's first turn; its permission request comes to the editor.
      const first = await zed.conn.agent.request("session/prompt", { sessionId, prompt: [{ type: "text", text: "say:hello_editor write:from-editor.txt" }] });
      expect(first.stopReason).toBe("end_turn");
      expect(zed.asked.length).toBeGreaterThan(0);
      expect(new Set(zed.asked)).toEqual(new Set(["Write from-editor.txt"]));
      expect(said(zed, sessionId)).toContain("hello editor");

      const second = await zed.conn.agent.request("session/prompt", { sessionId, prompt: [{ type: "text", text: "say:second_turn" }] });
      expect(second.stopReason).toBe("end_turn");
      expect(said(zed, sessionId)).toContain("second turn");

      // The session is a run of the team, listed for any editor.
      const { sessions } = await zed.conn.agent.request("session/list", {});
      const listed = sessions.find((s) => s.cwd === repo)!;
      expect(listed.sessionId).toMatch(/^run_/);
      const runId = listed.sessionId;

      // A second editor attaches: the history is replayed, then it prompts and cancels a turn.
      const other = editor(daemon);
      try {
        await other.conn.agent.request("initialize", { protocolVersion: 1, clientCapabilities: {} });
        await other.conn.agent.request("session/load", { sessionId: runId, cwd: repo, mcpServers: [] });
        expect(said(other, runId)).toContain("hello editor");
        expect(said(other, runId)).toContain("second turn");
        const hanging = other.conn.agent.request("session/prompt", { sessionId: runId, prompt: [{ type: "text", text: "say:waiting hang" }] });
        for (let i = 0; i < 200 && !said(other, runId).includes("waiting"); i++) await new Promise((r) => setTimeout(r, 50));
        await other.conn.agent.notify("session/cancel", { sessionId: runId });
        expect((await hanging).stopReason).toBe("cancelled");
      } finally {
        await other.close();
      }

      await daemon.runs.completeRun({ runId, status: RunStatus.COMPLETED });
      const final = (await watchToEnd(daemon, runId)).pop()!;
      expect(final.status).toBe(RunStatus.COMPLETED);
      expect(sh(repo, "git", "show", `${final.resultBranch}:from-editor.txt`)).not.toBe("");
    } finally {
      await zed.close();
    }
  });
});
