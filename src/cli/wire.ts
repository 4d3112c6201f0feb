// What a client command needs once it talks to the daemon, in one module that commands.ts
// loads after `--help` and flag checks: the descriptors and the transport are most of a
// CLI call's start-up.
export { create, toJson } from "@bufbuild/protobuf";
export { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
export { Code, ConnectError } from "@connectrpc/connect";
export { TaskSchema } from "../gen/paddock/v1/task_pb.js";
export { AgentKind, AgentSpecSchema, CreatePullRequestResponseSchema, LogEntrySchema, PermissionPolicy, RunEventSchema, RunMode, RunStatus, TaskRunSchema } from "../gen/paddock/v1/task_run_pb.js";
export { EnvironmentSchema, NetworkAccess, SecretBrokerSchema, SecretInputSchema } from "../gen/paddock/v1/environment_pb.js";
export { CreateTokenResponseSchema, TokenSchema } from "../gen/paddock/v1/token_pb.js";
import { connect as connectWith, type Clients } from "./client.js";

// Under Bun (the binary), calls go over Bun's native fetch: node:http alone is a large share
// of a CLI call's start-up there. Under Node (development, tests) over connect-node.
const makeTransport = process.versions.bun ? (await import("./fetch-transport.js")).fetchTransport : (await import("./node-transport.js")).nodeTransport;

export function connect(address: string | undefined, defaultSocket: string, token?: string): Clients {
  return connectWith(address, defaultSocket, token, makeTransport);
}
