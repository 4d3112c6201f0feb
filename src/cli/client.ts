import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { existsSync } from "node:fs";
import type { EnvironmentService } from "../gen/paddock/v1/environment_pb.js";
import type { TaskService } from "../gen/paddock/v1/task_pb.js";
import type { TaskRunService } from "../gen/paddock/v1/task_run_pb.js";
import type { TokenService } from "../gen/paddock/v1/token_pb.js";

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

/** The services a command calls: each one's generated file costs start-up to load, so a command loads only its own. */
export interface Services {
  TaskService?: typeof TaskService;
  TaskRunService?: typeof TaskRunService;
  EnvironmentService?: typeof EnvironmentService;
  TokenService?: typeof TokenService;
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
 * A client is made on first use, from `services`; one not given there is a bug in the command.
 */
export function connect(address: string | undefined, defaultSocket: string, token: string | undefined, makeTransport: TransportFactory, services: Services): Clients {
  const addr = address || (existsSync(defaultSocket) ? `unix:${defaultSocket}` : "http://127.0.0.1:7777");
  // The unix socket is trusted as admin; over TCP the daemon wants an API token.
  const interceptors: Interceptor[] = token ? [bearer(token)] : [];
  const transport = addr.startsWith("unix:") ? makeTransport({ baseUrl: "http://localhost", socketPath: addr.slice(5), interceptors }) : makeTransport({ baseUrl: addr, interceptors });
  const made = new Map<keyof Services, unknown>();
  const client = <K extends keyof Services>(name: K): Client<NonNullable<Services[K]>> => {
    const service = services[name];
    if (!service) throw new Error(`${name} was not loaded for this command`);
    if (!made.has(name)) made.set(name, createClient(service, transport));
    return made.get(name) as Client<NonNullable<Services[K]>>;
  };
  return {
    get tasks() {
      return client("TaskService");
    },
    get runs() {
      return client("TaskRunService");
    },
    get environments() {
      return client("EnvironmentService");
    },
    get tokens() {
      return client("TokenService");
    },
    address: addr,
  };
}
