import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { existsSync } from "node:fs";
import { TaskService } from "../gen/paddock/v1/task_pb.js";
import { TaskRunService } from "../gen/paddock/v1/task_run_pb.js";

export interface Clients {
  tasks: Client<typeof TaskService>;
  runs: Client<typeof TaskRunService>;
  address: string;
}

/**
 * The address is "unix:/path/to/paddock.sock" or "http://host:port". Without one, the
 * daemon's socket in the data dir is used when it exists, else http://127.0.0.1:7777.
 */
export function connect(address: string | undefined, defaultSocket: string): Clients {
  const addr = address || (existsSync(defaultSocket) ? `unix:${defaultSocket}` : "http://127.0.0.1:7777");
  const transport = addr.startsWith("unix:")
    ? createConnectTransport({ baseUrl: "http://localhost", httpVersion: "1.1", nodeOptions: { socketPath: addr.slice(5) } })
    : createConnectTransport({ baseUrl: addr, httpVersion: "1.1" });
  return { tasks: createClient(TaskService, transport), runs: createClient(TaskRunService, transport), address: addr };
}
