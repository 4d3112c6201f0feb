import { create, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { durationFromMs, timestampFromMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  AgentKind,
  LogEntrySchema,
  PermissionPolicy,
  RunEventSchema,
  RunMode,
  RunStatus,
  SandboxLimitsSchema,
  TaskRunSchema,
  type LogEntry,
  type RunEvent,
  type TaskRun,
} from "../gen/paddock/v1/task_run_pb.js";
import { TaskSchema, type Task } from "../gen/paddock/v1/task_pb.js";
import type { LogLine, RunEventRow, RunStatusName, TaskRecord } from "../runs/records.js";
import type { StoredRun } from "../runs/records.js";

const ts = (ms: number | null): Timestamp | undefined => (ms === null ? undefined : timestampFromMs(ms));

export function taskToProto(t: TaskRecord): Task {
  return create(TaskSchema, {
    id: t.id,
    team: t.team,
    environmentId: t.environmentId,
    taskNumber: BigInt(t.taskNumber),
    title: t.title,
    description: t.description,
    repository: t.repository,
    repositoryUrl: t.repositoryUrl,
    origin: t.origin,
    createTime: ts(t.createdAt),
  });
}

export function statusToProto(s: RunStatusName): RunStatus {
  switch (s) {
    case "queued":
      return RunStatus.QUEUED;
    case "in_progress":
      return RunStatus.IN_PROGRESS;
    case "completed":
      return RunStatus.COMPLETED;
    case "failed":
      return RunStatus.FAILED;
    case "cancelled":
      return RunStatus.CANCELLED;
    default:
      return assertNever(s);
  }
}

export function statusFromProto(s: RunStatus): RunStatusName | undefined {
  switch (s) {
    case RunStatus.UNSPECIFIED:
      return undefined;
    case RunStatus.QUEUED:
      return "queued";
    case RunStatus.IN_PROGRESS:
      return "in_progress";
    case RunStatus.COMPLETED:
      return "completed";
    case RunStatus.FAILED:
      return "failed";
    case RunStatus.CANCELLED:
      return "cancelled";
    default:
      return assertNever(s);
  }
}

export function runToProto(r: StoredRun): TaskRun {
  return create(TaskRunSchema, {
    id: r.id,
    team: r.team,
    environmentId: r.environmentId,
    networkPolicyEnforced: r.networkPolicyEnforced,
    agentIsolated: r.agentIsolated,
    agentKind: r.agentKind === "acp" ? AgentKind.ACP : AgentKind.COMMAND,
    awaitingInput: r.awaitingInput,
    priority: r.priority,
    queuePosition: r.queuePosition,
    mode: r.runMode === "interactive" ? RunMode.INTERACTIVE : RunMode.BACKGROUND,
    permissionPolicy: r.permissionPolicy === "ask" ? PermissionPolicy.ASK : r.permissionPolicy === "deny" ? PermissionPolicy.DENY : PermissionPolicy.AUTO_ALLOW,
    image: r.image,
    taskId: r.taskId,
    runNumber: BigInt(r.runNumber),
    status: statusToProto(r.status),
    phase: r.phase,
    provider: r.provider,
    errorMessage: r.errorMessage,
    deadline: ts(r.deadlineAt),
    cleanedAt: ts(r.cleanedAt),
    createTime: ts(r.createdAt),
    startTime: ts(r.startedAt),
    finishTime: ts(r.finishedAt),
    updateTime: ts(r.updatedAt),
    branch: r.branch,
    resultBranch: r.resultBranch,
    resultCommit: r.resultCommit,
    pullRequestUrl: r.pullRequestUrl,
    pullRequestNumber: BigInt(r.pullRequestNumber),
    openPullRequest: r.openPullRequest,
    agentCommand: r.agentCommand,
    phaseTimings: r.phaseTimings.map((p) => ({
      phase: p.phase,
      startTime: timestampFromMs(p.start),
      duration: p.end === null ? undefined : durationFromMs(p.end - p.start),
    })),
    exitCode: r.exitCode ?? undefined,
    handedOffTime: r.handoff.handedOffAt ? ts(r.handoff.handedOffAt) : undefined,
    handedOffTo: r.handoff.handedOffTo ?? "",
    fromHandoff: !!r.handoff.uploadId,
    handoffSourceRunId: r.handoff.sourceRunId ?? "",
    handoffResume: r.handoff.resume ?? "",
    limits:
      Object.keys(r.limits).length > 0
        ? create(SandboxLimitsSchema, {
            cpus: r.limits.cpus,
            memoryBytes: r.limits.memoryBytes === undefined ? undefined : BigInt(r.limits.memoryBytes),
            pids: r.limits.pids,
            runtime: r.limits.runtime ?? "",
          })
        : undefined,
  });
}

/**
 * Log replay is the hot path (thousands of lines per response), so the message is built
 * as the plain object protobuf-es v2 messages are, skipping create()'s reflection.
 * `text` and `continued` are set for one piece of a line sent in pieces.
 */
export function logToProto(l: LogLine, text = l.text, continued = false): LogEntry {
  return {
    $typeName: LogEntrySchema.typeName,
    seq: BigInt(l.seq),
    time: {
      $typeName: "google.protobuf.Timestamp",
      seconds: BigInt(Math.floor(l.time / 1000)),
      nanos: (l.time % 1000) * 1_000_000,
    },
    stream: l.stream,
    text,
    continued,
  };
}

/**
 * Bytes of log text per StreamLogs message: far under the server's writeMaxBytes and the
 * 4 MiB a gRPC client accepts by default, even when JSON escaping swells the text.
 */
export const LOG_MESSAGE_BYTES = 1024 * 1024;
/** Room for an entry's seq, time, stream and field tags. */
const ENTRY_OVERHEAD = 64;

/**
 * Packs stored lines into StreamLogs messages of at most `maxBytes`. A line that does not
 * fit one message is sent in pieces, each alone in its message, all but the last marked
 * continued, so that any line can be read by a client with any message limit above it.
 */
export function* logMessages(lines: readonly LogLine[], maxBytes = LOG_MESSAGE_BYTES): Generator<LogEntry[]> {
  let batch: LogEntry[] = [];
  let size = 0;
  for (const l of lines) {
    const bytes = Buffer.byteLength(l.text) + ENTRY_OVERHEAD;
    if (batch.length > 0 && size + bytes > maxBytes) {
      yield batch;
      batch = [];
      size = 0;
    }
    if (bytes <= maxBytes) {
      batch.push(logToProto(l));
      size += bytes;
      continue;
    }
    const text = Buffer.from(l.text);
    const pieceBytes = maxBytes - ENTRY_OVERHEAD;
    for (let start = 0; start < text.length; ) {
      let end = Math.min(start + pieceBytes, text.length);
      // Never cut inside a UTF-8 sequence: each piece must decode to the same characters.
      while (end < text.length && (text[end]! & 0xc0) === 0x80) end--;
      yield [logToProto(l, text.toString("utf8", start, end), end < text.length)];
      start = end;
    }
  }
  if (batch.length > 0) yield batch;
}

/** One stored event as the API's RunEvent: a log line, or the event its JSON holds. */
function eventToProto(r: RunEventRow, log?: LogEntry): RunEvent {
  const base = { seq: BigInt(r.seq), time: timestampFromMs(r.time) };
  if (r.kind === "log") return create(RunEventSchema, { ...base, kind: { case: "log", value: log ?? logToProto(r) } });
  const p = JSON.parse(r.payload ?? "{}") as Record<string, JsonValue>;
  const obj = (v: JsonValue | undefined): JsonObject => (v && typeof v === "object" && !Array.isArray(v) ? v : {});
  const str = (v: JsonValue | undefined): string => (typeof v === "string" ? v : "");
  switch (r.kind) {
    case "agent_update":
      return create(RunEventSchema, {
        ...base,
        kind: { case: "agentUpdate", value: { sessionId: str(p.sessionId), updateKind: str(p.updateKind), update: obj(p.update), replayed: p.replayed === true } },
      });
    case "prompt":
      return create(RunEventSchema, {
        ...base,
        kind: { case: "prompt", value: { promptId: str(p.promptId), content: (Array.isArray(p.content) ? p.content : []).map(obj), by: str(p.by) } },
      });
    case "permission_request":
      return create(RunEventSchema, {
        ...base,
        kind: {
          case: "permissionRequest",
          value: {
            requestId: str(p.requestId),
            toolCall: obj(p.toolCall),
            options: (Array.isArray(p.options) ? p.options : []).map((o) => {
              const x = obj(o);
              return { optionId: str(x.optionId), name: str(x.name), kind: str(x.kind) };
            }),
            expireTime: typeof p.expiresAt === "number" ? timestampFromMs(p.expiresAt) : undefined,
          },
        },
      });
    case "permission_resolved":
      return create(RunEventSchema, { ...base, kind: { case: "permissionResolved", value: { requestId: str(p.requestId), optionId: str(p.optionId), by: str(p.by) } } });
    case "turn_ended":
      return create(RunEventSchema, { ...base, kind: { case: "turnEnded", value: { promptId: str(p.promptId), stopReason: str(p.stopReason) } } });
    default:
      return assertNever(r.kind);
  }
}

/**
 * Packs stored events into StreamEvents messages of at most `maxBytes`, like
 * logMessages: a log line too long for one message goes in continued pieces.
 */
export function* eventMessages(rows: readonly RunEventRow[], maxBytes = LOG_MESSAGE_BYTES): Generator<RunEvent[]> {
  let batch: RunEvent[] = [];
  let size = 0;
  for (const r of rows) {
    const bytes = Buffer.byteLength(r.text) + (r.payload ? Buffer.byteLength(r.payload) : 0) + ENTRY_OVERHEAD;
    if (batch.length > 0 && size + bytes > maxBytes) {
      yield batch;
      batch = [];
      size = 0;
    }
    if (r.kind === "log" && bytes > maxBytes) {
      for (const [piece] of logMessages([r], maxBytes)) yield [eventToProto(r, piece)];
      continue;
    }
    batch.push(eventToProto(r));
    size += bytes;
  }
  if (batch.length > 0) yield batch;
}

function assertNever(x: never): never {
  throw new Error(`unexpected value ${String(x)}`);
}
