// What a client command needs once it talks to the daemon, in one module that commands.ts
// loads after `--help` and flag checks: the descriptors and the transport are most of a
// CLI call's start-up. Each service's generated file is loaded by the commands that call it
// (`task list` builds no descriptors of runs, environments or tokens).
export { create, toJson } from "@bufbuild/protobuf";
export { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
export { Code, ConnectError } from "@connectrpc/connect";
import { connect as connectWith, type Clients, type Services } from "./client.js";

// Under Bun (the binary), calls go over Bun's native fetch: node:http alone is a large share
// of a CLI call's start-up there. Under Node (development, tests) over connect-node.
const makeTransport = process.versions.bun ? (await import("./fetch-transport.js")).fetchTransport : (await import("./node-transport.js")).nodeTransport;

const generated = {
  tasks: () => import("../gen/paddock/v1/task_pb.js"),
  runs: () => import("../gen/paddock/v1/task_run_pb.js"),
  environments: () => import("../gen/paddock/v1/environment_pb.js"),
  tokens: () => import("../gen/paddock/v1/token_pb.js"),
};
export type ServiceName = keyof typeof generated;
/** Every generated export a command may use; only its services' are there at run time. */
export type Generated = Awaited<ReturnType<(typeof generated)[ServiceName]>> &
  Awaited<ReturnType<typeof generated.tasks>> &
  Awaited<ReturnType<typeof generated.runs>> &
  Awaited<ReturnType<typeof generated.environments>> &
  Awaited<ReturnType<typeof generated.tokens>>;

/** The generated modules of `names`, their exports in one object. */
export async function loadGenerated(names: readonly ServiceName[]): Promise<Generated> {
  return Object.assign({}, ...(await Promise.all(names.map((n) => generated[n]())))) as Generated;
}

export function connect(address: string | undefined, defaultSocket: string, token: string | undefined, services: Services): Clients {
  return connectWith(address, defaultSocket, token, makeTransport, services);
}
