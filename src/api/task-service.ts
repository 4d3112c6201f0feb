import type { ServiceImpl } from "@connectrpc/connect";
import { TaskService } from "../gen/paddock/v1/task_pb.js";
import { InvalidArgumentError } from "../errors.js";
import { newId } from "../runs/run-manager.js";
import { usableEnvironment, type Environments } from "../runs/environments.js";
import { resolveRepository } from "../runs/repository-ref.js";
import type { Tasks } from "../runs/tasks.js";
import { principalOf } from "./auth.js";
import { taskToProto } from "./mapping.js";
import { decodePageToken, pageSize, paginate } from "./page-token.js";

export interface TaskServiceDeps {
  tasks: Tasks;
  environments: Environments;
  gitHost: string;
}

function bounded(field: string, value: string, max: number, required = false): string {
  if (required && !value.trim()) throw new InvalidArgumentError(field, "is required");
  if (value.length > max) throw new InvalidArgumentError(field, `is ${value.length} characters; at most ${max}`);
  return value;
}

export function createTaskService(deps: TaskServiceDeps): ServiceImpl<typeof TaskService> {
  return {
    createTask(req, ctx) {
      const title = bounded("title", req.title, 200, true).trim();
      if (/[\r\n]/.test(title)) throw new InvalidArgumentError("title", "must be one line");
      const description = bounded("description", req.description, 64 * 1024);
      const origin = bounded("origin", req.origin, 100);
      bounded("repository", req.repository, 2048);
      const repositoryUrl = resolveRepository(req.repository, deps.gitHost);
      const team = principalOf(ctx).team;
      if (req.environmentId) usableEnvironment(deps.environments, req.environmentId, team, req.repository.trim(), "environment_id");
      const task = deps.tasks.create({
        id: newId("task"),
        team,
        environmentId: req.environmentId,
        title,
        description,
        repository: req.repository.trim(),
        repositoryUrl,
        origin: origin || "api",
        createdAt: Date.now(),
      });
      return { task: taskToProto(task) };
    },
    getTask(req, ctx) {
      if (!req.taskId) throw new InvalidArgumentError("task_id", "is required");
      return { task: taskToProto(deps.tasks.owned(principalOf(ctx).team, req.taskId)) };
    },
    listTasks(req, ctx) {
      const size = pageSize(req.pageSize);
      const rows = deps.tasks.list(principalOf(ctx).team, decodePageToken(req.pageToken), size + 1);
      const page = paginate(rows, size, (t) => t.taskNumber);
      return { tasks: page.items.map(taskToProto), nextPageToken: page.nextPageToken };
    },
  };
}
