import { Code, ConnectError, createContextKey, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { allows, LOCAL_ADMIN, type ApiTokens, type Principal, type Scope } from "../auth/api-tokens.js";

/** The caller, set by the auth interceptor for every API call. */
export const kPrincipal = createContextKey<Principal | null>(null, { description: "principal" });
/** True for requests that came in over the unix socket, which is trusted as admin. */
export const kTrustedTransport = createContextKey<boolean>(false, { description: "trusted transport" });

/** Health and reflection stay open: load balancers and `buf curl --list-methods` need no token. */
const OPEN_SERVICES = new Set(["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]);

/** The scope each method needs. A method missing here is refused: new methods must be placed. */
const REQUIRED: Record<string, Scope> = {
  "paddock.v1.TaskService/CreateTask": "tasks:write",
  "paddock.v1.TaskService/GetTask": "tasks:read",
  "paddock.v1.TaskService/ListTasks": "tasks:read",
  "paddock.v1.TaskRunService/StartRun": "runs:write",
  "paddock.v1.TaskRunService/CancelRun": "runs:write",
  "paddock.v1.TaskRunService/CompleteRun": "runs:write",
  "paddock.v1.TaskRunService/GetRun": "runs:read",
  "paddock.v1.TaskRunService/ListRuns": "runs:read",
  "paddock.v1.TaskRunService/StreamLogs": "runs:read",
  "paddock.v1.TaskRunService/WatchRun": "runs:read",
  "paddock.v1.TaskRunService/ListRunEgress": "runs:read",
  "paddock.v1.TaskRunService/StreamEvents": "runs:read",
  "paddock.v1.TaskRunService/SendPrompt": "runs:write",
  "paddock.v1.TaskRunService/RespondPermission": "runs:write",
  "paddock.v1.TaskRunService/CancelTurn": "runs:write",
  "paddock.v1.TaskRunService/CreatePullRequest": "runs:write",
  // A handoff ends a running run and hands out its work: a write.
  "paddock.v1.TaskRunService/ExportRun": "runs:write",
  "paddock.v1.TaskRunService/UploadHandoff": "runs:write",
  "paddock.v1.EnvironmentService/CreateEnvironment": "environments:write",
  "paddock.v1.EnvironmentService/UpdateEnvironment": "environments:write",
  "paddock.v1.EnvironmentService/DeleteEnvironment": "environments:write",
  // Reading an environment shows no secret value: whoever may read tasks may see it.
  "paddock.v1.EnvironmentService/GetEnvironment": "tasks:read",
  "paddock.v1.EnvironmentService/ListEnvironments": "tasks:read",
  "paddock.v1.TokenService/CreateToken": "admin",
  "paddock.v1.TokenService/ListTokens": "admin",
  "paddock.v1.TokenService/RevokeToken": "admin",
};

export function authInterceptor(tokens: ApiTokens): Interceptor {
  return (next) => async (req) => {
    if (OPEN_SERVICES.has(req.service.typeName)) return next(req);
    let principal: Principal | null = req.contextValues.get(kTrustedTransport) ? LOCAL_ADMIN : null;
    if (!principal) {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(req.header.get("authorization") ?? "");
      if (!m) throw new ConnectError("no API token: send Authorization: Bearer <token>", Code.Unauthenticated);
      principal = tokens.authenticate(m[1]!);
      if (!principal) throw new ConnectError("the API token is unknown, malformed or revoked", Code.Unauthenticated);
    }
    const scope = REQUIRED[`${req.service.typeName}/${req.method.name}`];
    if (!scope) throw new ConnectError("this method is not open to API tokens", Code.PermissionDenied);
    if (!allows(principal, scope)) throw new ConnectError(`the API token lacks the scope ${scope}`, Code.PermissionDenied);
    req.contextValues.set(kPrincipal, principal);
    return next(req);
  };
}

export function principalOf(ctx: HandlerContext): Principal {
  const p = ctx.values.get(kPrincipal);
  // The interceptor runs before every handler that calls this; reaching here is our bug.
  if (!p) throw new Error("no principal in the handler context");
  return p;
}
