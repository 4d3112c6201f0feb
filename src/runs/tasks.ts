import { NotFoundError } from "../errors.js";
import type { TaskRecord } from "../store/records.js";
import type { TasksRepository } from "../store/tasks-repository.js";

export type { TaskRecord };

/** Tasks as the API sees them: always a team's, and another team's do not exist. */
export function createTasks(repo: TasksRepository) {
  return {
    create: (t: Parameters<TasksRepository["create"]>[0]): TaskRecord => repo.create(t),
    owned(team: string, id: string): TaskRecord {
      const task = repo.get(id);
      if (!task || task.team !== team) throw new NotFoundError("task", id);
      return task;
    },
    list: (team: string, before: number, limit: number): TaskRecord[] => repo.list(team, before, limit),
  };
}
export type Tasks = ReturnType<typeof createTasks>;
