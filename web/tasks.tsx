import { useEffect, useRef, useState } from "preact/hooks";
import type { Clients } from "./api.js";
import { time, words } from "./format.js";
import { ErrorLine, Section, Status, useLoad } from "./ui.js";
import type { Task } from "../src/gen/paddock/v1/task_pb.js";
import { AgentKind, PermissionPolicy, RunMode, type TaskRun } from "../src/gen/paddock/v1/task_run_pb.js";

export function RunsTable({ runs, showTask }: { runs: TaskRun[]; showTask?: boolean }) {
  if (runs.length === 0) return <p class="muted">No runs yet.</p>;
  return (
    <table class="runs">
      <thead>
        <tr>
          <th>Run</th>
          {showTask && <th>Task</th>}
          <th>Status</th>
          <th>Provider</th>
          <th>Created</th>
        </tr>
      </thead>
      <tbody>
        {runs.map((r) => (
          <tr key={r.id} data-testid="run-row">
            <td>
              <a href={`#/runs/${r.id}`}>{r.id}</a> <span class="muted">#{String(r.runNumber)}</span>
            </td>
            {showTask && (
              <td>
                <a href={`#/tasks/${r.taskId}`}>{r.taskId}</a>
              </td>
            )}
            <td>
              <Status status={r.status} phase={r.phase} />
            </td>
            <td>{r.provider}</td>
            <td>{time(r.createTime)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

const matches = (task: Task, q: string) => {
  const needle = q.trim().toLowerCase();
  return !needle || [task.title, task.description, task.repository, task.id, `#${task.taskNumber}`].some((s) => s.toLowerCase().includes(needle));
};

export function TasksPage({ api }: { api: Clients }) {
  const [query, setQuery] = useState("");
  const [pages, setPages] = useState<{ tasks: Task[]; next: string }>({ tasks: [], next: "" });
  const tasks = useLoad(async () => {
    const res = await api.tasks.listTasks({ pageSize: 200 });
    setPages({ tasks: res.tasks, next: res.nextPageToken });
    return res.tasks;
  }, [api]);
  const runs = useLoad(() => api.runs.listRuns({ pageSize: 20 }).then((r) => r.runs), [api]);
  const loading = useRef(false);
  const more = async () => {
    if (loading.current) return;
    loading.current = true;
    try {
      const res = await api.tasks.listTasks({ pageSize: 1000, pageToken: pages.next });
      setPages({ tasks: [...pages.tasks, ...res.tasks], next: res.nextPageToken });
    } finally {
      loading.current = false;
    }
  };
  // A search covers every task: the rest are loaded (up to 5,000) once a search starts.
  useEffect(() => {
    // A failure leaves the list as it is; the Load more button can try again.
    if (query.trim() && pages.next && pages.tasks.length < 5000) more().catch(() => undefined);
  }, [query, pages]);
  const shown = pages.tasks.filter((t) => matches(t, query));
  return (
    <>
      <Section title="Recent runs" actions={<button type="button" onClick={runs.reload}>Refresh</button>}>
        <ErrorLine error={runs.error} />
        {runs.value && <RunsTable runs={runs.value} showTask />}
      </Section>
      <Section title="Tasks">
        <input type="search" placeholder="Search title, description, repository, id" value={query} onInput={(e) => setQuery(e.currentTarget.value)} aria-label="Search tasks" />
        <ErrorLine error={tasks.error} />
        <table class="tasks">
          <thead>
            <tr>
              <th>#</th>
              <th>Title</th>
              <th>Repository</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((t) => (
              <tr key={t.id} data-testid="task-row">
                <td>{String(t.taskNumber)}</td>
                <td>
                  <a href={`#/tasks/${t.id}`}>{t.title}</a>
                </td>
                <td>{t.repository}</td>
                <td>{time(t.createTime)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {tasks.value && shown.length === 0 && <p class="muted">No tasks{query ? " match" : ""}.</p>}
        {pages.next && (
          <button type="button" onClick={() => void more()}>
            Load more
          </button>
        )}
      </Section>
      <NewTask api={api} />
    </>
  );
}

function NewTask({ api }: { api: Clients }) {
  const envs = useLoad(() => api.environments.listEnvironments({ pageSize: 1000 }).then((r) => r.environments), [api]);
  const [error, setError] = useState<unknown>();
  const submit = (e: Event) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget as HTMLFormElement);
    const get = (k: string) => String(f.get(k) ?? "");
    api.tasks.createTask({ title: get("title"), description: get("description"), repository: get("repository"), environmentId: get("environment"), origin: "web" }).then(
      ({ task }) => (location.hash = `#/tasks/${task!.id}`),
      setError,
    );
  };
  return (
    <Section title="New task">
      <form class="grid" onSubmit={submit} data-testid="new-task">
        <label>
          Title <input name="title" required maxLength={200} />
        </label>
        <label>
          Repository <input name="repository" required placeholder="owner/repo, a git URL or a local path" />
        </label>
        <label class="wide">
          Description (the prompt) <textarea name="description" rows={4} />
        </label>
        <label>
          Environment
          <select name="environment">
            <option value="">none</option>
            {envs.value?.map((e) => (
              <option value={e.id}>{e.name}</option>
            ))}
          </select>
        </label>
        <div>
          <button type="submit">Create task</button>
        </div>
        <ErrorLine error={error} />
      </form>
    </Section>
  );
}

export function TaskPage({ api, taskId }: { api: Clients; taskId: string }) {
  const task = useLoad(() => api.tasks.getTask({ taskId }).then((r) => r.task!), [api, taskId]);
  const runs = useLoad(() => api.runs.listRuns({ taskId, pageSize: 100 }).then((r) => r.runs), [api, taskId]);
  const t = task.value;
  return (
    <>
      <ErrorLine error={task.error} />
      {t && (
        <Section title={`Task #${t.taskNumber}: ${t.title}`}>
          <dl>
            <dt>Id</dt>
            <dd>{t.id}</dd>
            <dt>Repository</dt>
            <dd>{t.repositoryUrl || t.repository}</dd>
            <dt>Environment</dt>
            <dd>{t.environmentId || "none"}</dd>
            <dt>Team</dt>
            <dd>{t.team}</dd>
            <dt>Created</dt>
            <dd>{time(t.createTime)}</dd>
          </dl>
          {t.description && <pre class="prompt">{t.description}</pre>}
        </Section>
      )}
      <Section title="Runs" actions={<button type="button" onClick={runs.reload}>Refresh</button>}>
        <ErrorLine error={runs.error} />
        {runs.value && <RunsTable runs={runs.value} />}
      </Section>
      <StartRun api={api} taskId={taskId} />
    </>
  );
}

function StartRun({ api, taskId }: { api: Clients; taskId: string }) {
  const [kind, setKind] = useState("default");
  const [error, setError] = useState<unknown>();
  const submit = (e: Event) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget as HTMLFormElement);
    const get = (k: string) => String(f.get(k) ?? "");
    const command = words(get("command"));
    const agent =
      kind === "command" ? { kind: AgentKind.COMMAND, command } : kind === "acp" ? { kind: AgentKind.ACP, command } : kind.startsWith("preset:") ? { kind: AgentKind.ACP, preset: kind.slice(7) } : undefined;
    api.runs
      .startRun({
        taskId,
        agent,
        provider: get("provider"),
        branch: get("branch"),
        mode: Number(get("mode")) as RunMode,
        permissionPolicy: Number(get("policy")) as PermissionPolicy,
        idempotencyKey: crypto.randomUUID(),
      })
      .then(({ run }) => (location.hash = `#/runs/${run!.id}`), setError);
  };
  const acp = kind === "acp" || kind.startsWith("preset:");
  return (
    <Section title="Start a run">
      <form class="grid" onSubmit={submit} data-testid="start-run">
        <label>
          Agent
          <select name="kind" value={kind} onChange={(e) => setKind(e.currentTarget.value)}>
            <option value="default">the environment's or daemon's</option>
            <option value="command">a command</option>
            <option value="acp">an ACP agent command</option>
            <option value="preset:claude-code">Claude Code (ACP)</option>
            <option value="preset:codex">Codex (ACP)</option>
          </select>
        </label>
        {(kind === "command" || kind === "acp") && (
          <label>
            Command <input name="command" required placeholder="argv, space-separated" />
          </label>
        )}
        <label>
          Provider
          <select name="provider">
            <option value="">default</option>
            <option value="local">local</option>
            <option value="docker">docker</option>
          </select>
        </label>
        <label>
          Branch <input name="branch" placeholder="the default branch" />
        </label>
        {acp && (
          <>
            <label>
              Mode
              <select name="mode">
                <option value={RunMode.UNSPECIFIED}>default</option>
                <option value={RunMode.BACKGROUND}>background</option>
                <option value={RunMode.INTERACTIVE}>interactive</option>
              </select>
            </label>
            <label>
              Permission requests
              <select name="policy">
                <option value={PermissionPolicy.UNSPECIFIED}>default</option>
                <option value={PermissionPolicy.ASK}>ask me</option>
                <option value={PermissionPolicy.AUTO_ALLOW}>allow all</option>
                <option value={PermissionPolicy.DENY}>deny all</option>
              </select>
            </label>
          </>
        )}
        <div>
          <button type="submit">Start run</button>
        </div>
        <ErrorLine error={error} />
      </form>
    </Section>
  );
}
