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
export { connect } from "./client.js";
