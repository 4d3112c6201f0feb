import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EgressAttemptSchema,
  BrokeredUseSchema, HandoffManifestSchema, TaskRunService, type HandoffManifest, type UploadHandoffRequest } from "../gen/paddock/v1/task_run_pb.js";
import { bundleChunks, type HandoffManifestData } from "../runs/handoffs.js";
import { InvalidArgumentError } from "../errors.js";
import { principalOf } from "./auth.js";
import { runTimeoutMs } from "./run-timeout.js";
import type { RunManager } from "../runs/run-manager.js";
import type { RunLimits } from "../runs/records.js";
import { eventMessages, logMessages, runToProto, statusFromProto } from "./mapping.js";
import type { StartRunParams } from "../runs/run-manager.js";
import type { Json } from "../agent/runner-protocol.js";
import { RUN_EVENT_KINDS, type RunEventKind } from "../runs/records.js";
import { AgentKind, PermissionPolicy, RunMode, type StartRunRequest } from "../gen/paddock/v1/task_run_pb.js";
import { decodePageToken, pageSize, paginate } from "./page-token.js";
import { endOnShutdown } from "./shutdown.js";

const BRANCH = /^(?!-)(?!.*\.\.)(?!.*\/\/)(?!.*@\{)[^\s~^:?*[\\\x00-\x1f\x7f]+(?<![./]|\.lock)$/;

function required(field: string, value: string): string {
  if (!value) throw new InvalidArgumentError(field, "is required");
  return value;
}

/** The agent, mode and policy a StartRun names; resolved with the environment's defaults by the run layer. */
function agentOf(req: StartRunRequest): Pick<StartRunParams, "agentCommand" | "agent" | "mode" | "permissionPolicy"> {
  req.agentCommand.forEach((arg, i) => {
    if (i === 0 && !arg.trim()) throw new InvalidArgumentError("agent_command", "the program (first element) is empty");
  });
  return {
    agentCommand: req.agentCommand,
    agent: req.agent ? { kind: req.agent.kind === AgentKind.ACP ? "acp" : req.agent.kind === AgentKind.COMMAND ? "command" : "", preset: req.agent.preset, command: req.agent.command } : null,
    mode: req.mode === RunMode.INTERACTIVE ? "interactive" : req.mode === RunMode.BACKGROUND ? "background" : "",
    permissionPolicy: policyName(req.permissionPolicy),
  };
}

export function policyName(p: PermissionPolicy): "" | "auto_allow" | "ask" | "deny" {
  return p === PermissionPolicy.ASK ? "ask" : p === PermissionPolicy.DENY ? "deny" : p === PermissionPolicy.AUTO_ALLOW ? "auto_allow" : "";
}

export function createTaskRunService(runs: RunManager): ServiceImpl<typeof TaskRunService> {
  /** The run, if the caller's team owns it; another team's run does not exist for them. */
  const owned = (runId: string, ctx: HandlerContext) => runs.owned(required("run_id", runId), principalOf(ctx).team);
  return {
    async startRun(req, ctx) {
      if (!req.handoff) required("task_id", req.taskId);
      if (req.handoff && req.handoff.prompt.length > 1024 * 1024) throw new InvalidArgumentError("handoff.prompt", "is longer than 1 MiB");
      if (req.branch && !BRANCH.test(req.branch)) {
        throw new InvalidArgumentError("branch", `${JSON.stringify(req.branch)} is not a valid git branch name`);
      }
      const timeoutMs = runTimeoutMs("timeout", req.timeout);
      if (req.priority < -1000 || req.priority > 1000) throw new InvalidArgumentError("priority", `must be between -1000 and 1000, not ${req.priority}`);
      if (req.idempotencyKey.length > 200) throw new InvalidArgumentError("idempotency_key", "is longer than 200 characters");
      const limits: RunLimits = {};
      if (req.limits) {
        const l = req.limits;
        if (l.cpus !== undefined && !(l.cpus > 0 && l.cpus <= 1024)) throw new InvalidArgumentError("limits.cpus", "must be more than 0 and at most 1024");
        if (l.memoryBytes !== undefined && !(l.memoryBytes >= 6n * 1024n * 1024n)) throw new InvalidArgumentError("limits.memory_bytes", "must be at least 6 MiB");
        if (l.pids !== undefined && !(l.pids >= 16)) throw new InvalidArgumentError("limits.pids", "must be at least 16");
        if (l.runtime && !/^[a-z0-9._-]+$/.test(l.runtime)) throw new InvalidArgumentError("limits.runtime", `${JSON.stringify(l.runtime)} is not a runtime name (runc, runsc)`);
        if (l.cpus !== undefined) limits.cpus = l.cpus;
        if (l.memoryBytes !== undefined) limits.memoryBytes = Number(l.memoryBytes);
        if (l.pids !== undefined) limits.pids = l.pids;
        if (l.runtime) limits.runtime = l.runtime;
      }
      const run = await runs.startStored({
        ...agentOf(req),
        team: principalOf(ctx).team,
        taskId: req.taskId,
        branch: req.branch,
        timeoutMs,
        provider: req.provider,
        idempotencyKey: req.idempotencyKey,
        limits,
        environmentId: req.environmentId,
        image: req.image.trim(),
        priority: req.priority,
        openPullRequest: req.openPullRequest,
        handoff: req.handoff ? { uploadId: required("handoff.upload_id", req.handoff.uploadId), prompt: req.handoff.prompt } : null,
      });
      return { run: runToProto(run) };
    },
    getRun(req, ctx) {
      return { run: runToProto(owned(req.runId, ctx)) };
    },
    listRuns(req, ctx) {
      const size = pageSize(req.pageSize);
      const rows = runs.list(
        { team: principalOf(ctx).team, taskId: req.taskId || undefined, status: statusFromProto(req.status) },
        decodePageToken(req.pageToken),
        size + 1,
      );
      const page = paginate(rows, size, (r) => r.seq);
      return { runs: page.items.map(runToProto), nextPageToken: page.nextPageToken };
    },
    cancelRun(req, ctx) {
      return { run: runToProto(runs.cancel(owned(req.runId, ctx).id)) };
    },
    completeRun(req, ctx) {
      owned(req.runId, ctx);
      const status = statusFromProto(req.status);
      if (status !== "completed" && status !== "failed") {
        throw new InvalidArgumentError("status", "must be RUN_STATUS_COMPLETED or RUN_STATUS_FAILED");
      }
      return { run: runToProto(runs.complete(req.runId, status, req.errorMessage)) };
    },
    async *streamLogs(req, ctx) {
      owned(req.runId, ctx);
      if (req.afterSeq < 0n) throw new InvalidArgumentError("after_seq", "must not be negative");
      for await (const batch of endOnShutdown(ctx, runs.logs(req.runId, Number(req.afterSeq), req.follow, ctx.signal))) {
        for (const entries of logMessages(batch)) yield { entries };
      }
    },
    listRunEgress(req, ctx) {
      const run = owned(req.runId, ctx);
      return {
        attempts: runs.egress(run.id).map((a) =>
          create(EgressAttemptSchema, { host: a.host, port: a.port, verdict: a.verdict, count: BigInt(a.count), firstTime: timestampFromMs(a.firstAt), lastTime: timestampFromMs(a.lastAt) }),
        ),
        brokeredUses: runs.brokeredUses(run.id).map((u) =>
          create(BrokeredUseSchema, { host: u.host, port: u.port, secretName: u.secretName, count: BigInt(u.count), firstTime: timestampFromMs(u.firstAt), lastTime: timestampFromMs(u.lastAt) }),
        ),
      };
    },
    async *streamEvents(req, ctx) {
      owned(req.runId, ctx);
      if (req.afterSeq < 0n) throw new InvalidArgumentError("after_seq", "must not be negative");
      const kinds = new Set<RunEventKind>();
      req.kinds.forEach((k, i) => {
        if (!(RUN_EVENT_KINDS as readonly string[]).includes(k)) throw new InvalidArgumentError(`kinds[${i}]`, `unknown kind ${JSON.stringify(k)}; known: ${RUN_EVENT_KINDS.join(", ")}`);
        kinds.add(k as RunEventKind);
      });
      for await (const batch of endOnShutdown(ctx, runs.runEvents(req.runId, Number(req.afterSeq), req.follow, kinds, ctx.signal))) {
        for (const events of eventMessages(batch)) yield { events };
      }
    },
    async sendPrompt(req, ctx) {
      owned(req.runId, ctx);
      if (!req.text && req.content.length === 0) throw new InvalidArgumentError("text", "give text or content");
      if (req.idempotencyKey.length > 200) throw new InvalidArgumentError("idempotency_key", "is longer than 200 characters");
      req.content.forEach((b, i) => {
        if (typeof b.type !== "string") throw new InvalidArgumentError(`content[${i}]`, 'is not an ACP content block (it needs a "type")');
      });
      const content = [...(req.text ? [{ type: "text", text: req.text }] : []), ...req.content] as Json[];
      const promptId = await runs.sendPrompt(req.runId, content, principalOf(ctx).name, req.idempotencyKey, ctx.signal);
      return { promptId };
    },
    async respondPermission(req, ctx) {
      owned(req.runId, ctx);
      required("request_id", req.requestId);
      await runs.respondPermission(req.runId, req.requestId, req.optionId || null, principalOf(ctx).name, ctx.signal);
      return {};
    },
    async cancelTurn(req, ctx) {
      owned(req.runId, ctx);
      await runs.cancelTurn(req.runId, ctx.signal);
      return {};
    },
    async createPullRequest(req, ctx) {
      const run = owned(req.runId, ctx);
      if (req.title.length > 256) throw new InvalidArgumentError("title", "is longer than 256 characters");
      if (req.body.length > 65536) throw new InvalidArgumentError("body", "is longer than 65536 characters");
      if (req.base && !BRANCH.test(req.base)) throw new InvalidArgumentError("base", `${JSON.stringify(req.base)} is not a valid git branch name`);
      const { pullRequest, run: after } = await runs.createPullRequest(run.id, { title: req.title.trim(), body: req.body, draft: req.draft, base: req.base }, ctx.signal);
      return { url: pullRequest.url, number: BigInt(pullRequest.number), created: pullRequest.created, run: runToProto(after) };
    },
    async *exportRun(req, ctx) {
      owned(req.runId, ctx);
      const h = await runs.exportRun(req.runId, "local", principalOf(ctx).name, ctx.signal);
      yield { part: { case: "manifest", value: manifestToProto(h.manifest) } };
      for await (const chunk of endOnShutdown(ctx, bundleChunks(h))) yield { part: { case: "chunk", value: new Uint8Array(chunk) } };
    },
    async uploadHandoff(reqs, ctx) {
      const it = reqs[Symbol.asyncIterator]();
      const first = await it.next();
      if (first.done || first.value.part.case !== "manifest") throw new InvalidArgumentError("manifest", "the first message must carry the manifest");
      const manifest = manifestFromProto(first.value.part.value);
      const chunks = (async function* () {
        for (let r = await it.next(); !r.done; r = await it.next()) {
          const m: UploadHandoffRequest = r.value;
          if (m.part.case !== "chunk") throw new InvalidArgumentError("manifest", "only the first message carries the manifest");
          yield m.part.value;
        }
      })();
      const { uploadId, size } = await runs.uploadHandoff(principalOf(ctx).team, manifest, chunks);
      return { uploadId, sizeBytes: BigInt(size) };
    },
    async *watchRun(req, ctx) {
      owned(req.runId, ctx);
      for await (const run of endOnShutdown(ctx, runs.watch(req.runId, ctx.signal))) yield { run: runToProto(run) };
    },
  };
}


function manifestToProto(m: HandoffManifestData): HandoffManifest {
  return create(HandoffManifestSchema, {
    runId: m.runId,
    taskId: m.taskId,
    branch: m.branch,
    headCommit: m.head,
    indexCommit: m.index,
    worktreeCommit: m.worktree,
    conversationCommit: m.conversation,
    agentKind: m.agentKind,
    agentCommand: m.agentCommand,
    acpSessionId: m.sessionId,
    sourceCwd: m.sourceCwd,
    lastEventSeq: BigInt(m.lastEventSeq),
    sessionFiles: m.files,
    bundleBytes: BigInt(m.bundleBytes),
  });
}

function manifestFromProto(m: HandoffManifest): HandoffManifestData {
  return {
    runId: m.runId,
    taskId: m.taskId,
    branch: m.branch,
    head: m.headCommit,
    index: m.indexCommit,
    worktree: m.worktreeCommit,
    conversation: m.conversationCommit,
    agentKind: m.agentKind,
    agentCommand: m.agentCommand,
    sessionId: m.acpSessionId,
    sourceCwd: m.sourceCwd,
    lastEventSeq: Number(m.lastEventSeq),
    files: m.sessionFiles.map((f) => ({ path: f.path, format: f.format as "claude" | "codex" | "other" })),
    bundleBytes: Number(m.bundleBytes),
  };
}
