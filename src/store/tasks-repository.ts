import type { Database } from "./database.js";
import type { TaskRecord } from "./records.js";

interface TaskRow {
  task_number: number;
  id: string;
  team: string;
  environment_id: string;
  title: string;
  description: string;
  repository: string;
  repository_url: string;
  origin: string;
  created_at: number;
}

const toTask = (r: TaskRow): TaskRecord => ({
  id: r.id,
  team: r.team,
  environmentId: r.environment_id,
  taskNumber: r.task_number,
  title: r.title,
  description: r.description,
  repository: r.repository,
  repositoryUrl: r.repository_url,
  origin: r.origin,
  createdAt: r.created_at,
});

export type NewTask = Omit<TaskRecord, "taskNumber">;

export function createTasksRepository(db: Database) {
  const insert = db.prepare(`INSERT INTO tasks (id, team, environment_id, title, description, repository, repository_url, origin, created_at)
    VALUES (:id, :team, :environmentId, :title, :description, :repository, :repositoryUrl, :origin, :createdAt)`);
  const byId = db.prepare<TaskRow>("SELECT * FROM tasks WHERE id = ?");
  const page = db.prepare<TaskRow>("SELECT * FROM tasks WHERE team = ? AND task_number < ? ORDER BY task_number DESC LIMIT ?");
  return {
    create(task: NewTask): TaskRecord {
      const r = insert.run({ ...task });
      return { ...task, taskNumber: Number(r.lastInsertRowid) };
    },
    get(id: string): TaskRecord | undefined {
      const row = byId.get([id]);
      return row && toTask(row);
    },
    /** The team's tasks, newest first, task_number below `before`. */
    list(team: string, before: number, limit: number): TaskRecord[] {
      return page.all([team, before, limit]).map(toTask);
    },
  };
}
export type TasksRepository = ReturnType<typeof createTasksRepository>;
