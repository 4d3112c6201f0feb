import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { EnvironmentService } from "../src/gen/paddock/v1/environment_pb.js";
import { TaskService } from "../src/gen/paddock/v1/task_pb.js";
import { TaskRunService } from "../src/gen/paddock/v1/task_run_pb.js";
import { TokenService } from "../src/gen/paddock/v1/token_pb.js";

export interface Clients {
  tasks: Client<typeof TaskService>;
  runs: Client<typeof TaskRunService>;
  environments: Client<typeof EnvironmentService>;
  tokens: Client<typeof TokenService>;
}

const TOKEN_KEY = "paddock.token";

/** The API token lives in this tab's session only: closing the tab signs out. */
export const savedToken = (): string | null => sessionStorage.getItem(TOKEN_KEY);
export const saveToken = (token: string | null): void => (token ? sessionStorage.setItem(TOKEN_KEY, token) : sessionStorage.removeItem(TOKEN_KEY));

/**
 * Clients of the daemon that served this page (same origin, so no CORS), or of `baseUrl`.
 * Binary protobuf: smaller than JSON on the wire and cheaper to parse.
 */
export function clients(token: string, baseUrl = location.origin): Clients {
  const bearer: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport = createConnectTransport({ baseUrl, useBinaryFormat: true, interceptors: [bearer] });
  return {
    tasks: createClient(TaskService, transport),
    runs: createClient(TaskRunService, transport),
    environments: createClient(EnvironmentService, transport),
    tokens: createClient(TokenService, transport),
  };
}

export const errorText = (error: unknown): string => {
  const e = ConnectError.from(error);
  return e.code === Code.Unauthenticated ? `not signed in: ${e.rawMessage}` : `${Code[e.code]}: ${e.rawMessage}`;
};

export const isAbort = (error: unknown): boolean => ConnectError.from(error).code === Code.Canceled;
