import { useState } from "preact/hooks";
import type { Clients } from "./api.js";
import { time } from "./format.js";
import { Action, ErrorLine, Section, useLoad } from "./ui.js";

const SCOPES = ["tasks:read", "tasks:write", "runs:read", "runs:write", "environments:write", "admin", "instance:admin"];

export function TokensPage({ api }: { api: Clients }) {
  const tokens = useLoad(() => api.tokens.listTokens({ pageSize: 1000 }).then((r) => r.tokens), [api]);
  const [secret, setSecret] = useState("");
  const [error, setError] = useState<unknown>();
  const submit = (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const f = new FormData(form);
    api.tokens.createToken({ team: String(f.get("team")), name: String(f.get("name")), scopes: f.getAll("scopes").map(String) }).then(
      (r) => (setSecret(r.secret), setError(undefined), form.reset(), tokens.reload()),
      setError,
    );
  };
  return (
    <>
      <Section title="API tokens">
        <ErrorLine error={tokens.error} />
        <table>
          <thead>
            <tr>
              <th>Name</th>
              <th>Team</th>
              <th>Scopes</th>
              <th>Created</th>
              <th>Last used</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {tokens.value?.map((t) => (
              <tr key={t.id} class={t.revokeTime ? "revoked" : ""} data-testid="token-row">
                <td>
                  {t.name} <span class="muted">{t.id}</span>
                </td>
                <td>{t.team}</td>
                <td>{t.scopes.join(" ")}</td>
                <td>{time(t.createTime)}</td>
                <td>{time(t.lastUsedTime) || "never"}</td>
                <td>
                  {t.revokeTime ? (
                    `revoked ${time(t.revokeTime)}`
                  ) : (
                    <Action
                      label="Revoke"
                      class="danger"
                      action={async () => {
                        if (!confirm(`Revoke ${t.name}? Clients using it are refused at once.`)) return;
                        await api.tokens.revokeToken({ tokenId: t.id });
                        tokens.reload();
                      }}
                    />
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </Section>
      <Section title="New token">
        <form class="grid" onSubmit={submit} data-testid="new-token">
          <label>
            Team <input name="team" required pattern="[A-Za-z0-9_-]{1,64}" placeholder="default" />
          </label>
          <label>
            Name <input name="name" required placeholder="ci, alice's laptop" />
          </label>
          <fieldset class="wide">
            <legend>Scopes</legend>
            {SCOPES.map((s) => (
              <label class="check">
                <input type="checkbox" name="scopes" value={s} /> {s}
              </label>
            ))}
          </fieldset>
          <div>
            <button type="submit">Create token</button>
          </div>
          <ErrorLine error={error} />
        </form>
        {secret && (
          <div class="secret" data-testid="new-secret">
            <p>The token's secret, shown this once:</p>
            <code>{secret}</code>
          </div>
        )}
      </Section>
    </>
  );
}
