import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { existsSync } from "node:fs";
import { EnvironmentService } from "../gen/paddock/v1/environment_pb.js";
import { TaskService } from "../gen/paddock/v1/task_pb.js";
import { TaskRunService } from "../gen/paddock/v1/task_run_pb.js";
import { TokenService } from "../gen/paddock/v1/token_pb.js";

/** Sends `token` as the bearer of every call. */
export function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

export interface Clients {
  tasks: Client<typeof TaskService>;
  runs: Client<typeof TaskRunService>;
  environments: Client<typeof EnvironmentService>;
  tokens: Client<typeof TokenService>;
  address: string;
}

/**
 * A Connect transport (HTTP/1.1, binary) to the daemon: at `baseUrl`, or through the unix
 * socket at `socketPath` when given. A daemon that cannot be reached fails a call with
 * Code.Unavailable, its cause carrying the system error code (ECONNREFUSED, ENOENT…).
 */
export type TransportFactory = (o: { baseUrl: string; socketPath?: string; interceptors: Interceptor[] }) => Transport;

/**
 * The address is "unix:/path/to/paddock.sock" or "http://host:port". Without one, the
 * daemon's socket in the data dir is used when it exists, else http://127.0.0.1:7777.
 */
export function connect(address: string | undefined, defaultSocket: string, token: string | undefined, makeTransport: TransportFactory): Clients {
  const addr = address || (existsSync(defaultSocket) ? `unix:${defaultSocket}` : "http://127.0.0.1:7777");
  // The unix socket is trusted as admin; over TCP the daemon wants an API token.
  const interceptors: Interceptor[] = token ? [bearer(token)] : [];
  const transport = addr.startsWith("unix:") ? makeTransport({ baseUrl: "http://localhost", socketPath: addr.slice(5), interceptors }) : makeTransport({ baseUrl: addr, interceptors });
  return {
    tasks: createClient(TaskService, transport),
    runs: createClient(TaskRunService, transport),
    environments: createClient(EnvironmentService, transport),
    tokens: createClient(TokenService, transport),
    address: addr,
  };
}
