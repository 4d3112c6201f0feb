import type { ConnectRouter } from "@connectrpc/connect";
import { file_grpc_health_v1_health } from "../gen/grpc/health/v1/health_pb.js";
import { file_grpc_reflection_v1_reflection } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { file_grpc_reflection_v1alpha_reflection } from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { file_paddock_v1_task, TaskService } from "../gen/paddock/v1/task_pb.js";
import { file_paddock_v1_task_run, TaskRunService } from "../gen/paddock/v1/task_run_pb.js";
import { file_paddock_v1_token, TokenService } from "../gen/paddock/v1/token_pb.js";
import type { ApiTokens } from "../auth/api-tokens.js";
import { EnvironmentService, file_paddock_v1_environment } from "../gen/paddock/v1/environment_pb.js";
import type { Environments } from "../runs/environments.js";
import { createEnvironmentService } from "./environment-service.js";
import { createTokenService } from "./token-service.js";
import type { RunManager } from "../runs/run-manager.js";
import type { Tasks } from "../runs/tasks.js";
import { ServingStatus, type HealthService } from "./health.js";
import { registerReflection } from "./reflection.js";
import { createTaskRunService } from "./task-run-service.js";
import { createTaskService } from "./task-service.js";

export interface RoutesDeps {
  tasks: Tasks;
  environments: Environments;
  providers: ReadonlySet<string>;
  /** Images environments may name (--docker-image and --sandbox-images). */
  sandboxImages: readonly string[];
  runs: RunManager;
  health: HealthService;
  gitHost: string;
  apiTokens: ApiTokens;
}

/** Every service on the listener: the API, health and reflection (so buf curl needs no protos). */
export function createRoutes(deps: RoutesDeps) {
  return (router: ConnectRouter) => {
    router.service(TaskService, createTaskService({ tasks: deps.tasks, environments: deps.environments, gitHost: deps.gitHost }));
    router.service(EnvironmentService, createEnvironmentService({ environments: deps.environments, providers: deps.providers, sandboxImages: deps.sandboxImages }));
    router.service(TaskRunService, createTaskRunService(deps.runs));
    router.service(TokenService, createTokenService({ apiTokens: deps.apiTokens }));
    deps.health.setStatus(TaskService.typeName, ServingStatus.SERVING);
    deps.health.setStatus(TaskRunService.typeName, ServingStatus.SERVING);
    deps.health.register(router);
    registerReflection(router, [
      file_paddock_v1_task,
      file_paddock_v1_task_run,
      file_paddock_v1_token,
      file_paddock_v1_environment,
      file_grpc_health_v1_health,
      file_grpc_reflection_v1_reflection,
      file_grpc_reflection_v1alpha_reflection,
    ]);
  };
}
