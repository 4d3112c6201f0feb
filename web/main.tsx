import { Code, ConnectError } from "@connectrpc/connect";
import { render } from "preact";
import { useEffect, useMemo, useState } from "preact/hooks";
import { clients, errorText, savedToken, saveToken, type Clients } from "./api.js";
import { EnvironmentsPage } from "./environments.js";
import { RunPage } from "./run.js";
import { TaskPage, TasksPage } from "./tasks.js";
import { TokensPage } from "./tokens.js";

/** Hash routes ("#/runs/run_1"): the daemon serves one page, and the back button works. */
function useRoute(): string[] {
  const parse = () => location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const [route, setRoute] = useState(parse);
  useEffect(() => {
    const onChange = () => setRoute(parse());
    addEventListener("hashchange", onChange);
    return () => removeEventListener("hashchange", onChange);
  }, []);
  return route;
}

function SignIn({ onToken }: { onToken: (token: string) => void }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = (e: Event) => {
    e.preventDefault();
    setBusy(true);
    // Any cheap call proves the token; the daemon says what is wrong with it. A token
    // without tasks:read is still a token: its pages say what it may not see.
    clients(token.trim())
      .tasks.listTasks({ pageSize: 1 })
      .catch((err: unknown) => {
        if (ConnectError.from(err).code !== Code.PermissionDenied) throw err;
      })
      .then(
        () => onToken(token.trim()),
        (err: unknown) => (setBusy(false), setError(errorText(err))),
      );
  };
  return (
    <main class="signin">
      <h1>paddock</h1>
      <form onSubmit={submit}>
        <label>
          API token
          <input type="password" name="token" autoComplete="off" value={token} onInput={(e) => setToken(e.currentTarget.value)} required />
        </label>
        <button type="submit" disabled={busy}>Sign in</button>
        {error && <p class="error" role="alert">{error}</p>}
        <p class="muted">Kept in this tab's session storage only. On a new daemon the admin token is in DATA_DIR/admin-token.</p>
      </form>
    </main>
  );
}

function App() {
  const [token, setToken] = useState(savedToken);
  const route = useRoute();
  const api = useMemo<Clients | null>(() => (token ? clients(token) : null), [token]);
  if (!api) return <SignIn onToken={(t) => (saveToken(t), setToken(t))} />;
  const [page, id] = route;
  const nav = (href: string, label: string, active: boolean) => (
    <a href={href} class={active ? "active" : ""}>
      {label}
    </a>
  );
  return (
    <>
      <nav class="top">
        <strong>paddock</strong>
        {nav("#/", "Tasks", !page || page === "tasks" || page === "runs")}
        {nav("#/environments", "Environments", page === "environments")}
        {nav("#/tokens", "Tokens", page === "tokens")}
        <span class="spacer" />
        <button type="button" class="link" onClick={() => (saveToken(null), setToken(null))}>
          Sign out
        </button>
      </nav>
      <main>
        {page === "tasks" && id ? (
          <TaskPage key={id} api={api} taskId={id} />
        ) : page === "runs" && id ? (
          <RunPage key={id} api={api} runId={id} />
        ) : page === "environments" ? (
          <EnvironmentsPage api={api} />
        ) : page === "tokens" ? (
          <TokensPage api={api} />
        ) : (
          <TasksPage api={api} />
        )}
      </main>
    </>
  );
}

const root = document.getElementById("app")!;
root.textContent = ""; // the "Loading…" line, which render() would keep
render(<App />, root);
