import { useState } from "preact/hooks";
import type { Clients } from "./api.js";
import { durationMs, time, words } from "./format.js";
import { Action, ErrorLine, Section, useLoad } from "./ui.js";
import { NetworkAccess, type Environment, type SecretInput } from "../src/gen/paddock/v1/environment_pb.js";
import { PermissionPolicy, RunMode } from "../src/gen/paddock/v1/task_run_pb.js";

const lines = (s: string) => s.split("\n").map((l) => l.trim()).filter(Boolean);
const access = (a: NetworkAccess) => (NetworkAccess[a] ?? "").toLowerCase();

export function EnvironmentsPage({ api }: { api: Clients }) {
  const envs = useLoad(() => api.environments.listEnvironments({ pageSize: 1000 }).then((r) => r.environments), [api]);
  const [editing, setEditing] = useState<Environment | "new" | null>(null);
  return (
    <>
      <Section title="Environments" actions={<button type="button" onClick={() => setEditing("new")}>New environment</button>}>
        <ErrorLine error={envs.error} />
        <table>
          <thead>
            <tr>
              <th>Name</th>
              <th>Network</th>
              <th>Secrets</th>
              <th>Provider</th>
              <th>Updated</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {envs.value?.map((e) => (
              <tr key={e.id} data-testid="environment-row">
                <td>
                  {e.name} <span class="muted">{e.id}</span>
                </td>
                <td>
                  {access(e.networkAccess)}
                  {e.allowedDomains.length > 0 && ` (${e.allowedDomains.join(", ")})`}
                </td>
                <td>{e.secrets.map((s) => s.name).join(", ") || "none"}</td>
                <td>{e.defaultProvider || "default"}</td>
                <td>{time(e.updateTime)}</td>
                <td class="row">
                  <button type="button" onClick={() => setEditing(e)}>
                    Edit
                  </button>
                  <Action
                    label="Delete"
                    class="danger"
                    action={async () => {
                      if (!confirm(`Delete environment ${e.name}?`)) return;
                      await api.environments.deleteEnvironment({ environmentId: e.id });
                      envs.reload();
                    }}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {envs.value?.length === 0 && <p class="muted">No environments: runs get the daemon's defaults.</p>}
      </Section>
      {editing && <EnvironmentForm key={editing === "new" ? "new" : editing.id} api={api} env={editing === "new" ? null : editing} done={() => (setEditing(null), envs.reload())} />}
    </>
  );
}

/** Secrets are write-only: the form shows their names, sets new values and removes names, never reads a value. */
function EnvironmentForm({ api, env, done }: { api: Clients; env: Environment | null; done: () => void }) {
  const [error, setError] = useState<unknown>();
  const submit = (e: Event) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget as HTMLFormElement);
    const get = (k: string) => String(f.get(k) ?? "");
    const timeoutMin = Number(get("timeout"));
    const fields = {
      id: env?.id ?? "",
      name: get("name"),
      networkAccess: Number(get("networkAccess")) as NetworkAccess,
      allowedDomains: words(get("allowedDomains").replaceAll(",", " ")),
      includeTrusted: f.get("includeTrusted") === "on",
      envVars: Object.fromEntries(lines(get("envVars")).map((l) => [l.slice(0, l.indexOf("=") < 0 ? l.length : l.indexOf("=")), l.includes("=") ? l.slice(l.indexOf("=") + 1) : ""])),
      setupScript: get("setupScript"),
      repositories: lines(get("repositories")),
      defaultProvider: get("defaultProvider"),
      timeout: timeoutMin > 0 ? { seconds: BigInt(Math.round(timeoutMin * 60)), nanos: 0 } : undefined,
      image: get("image"),
      mode: Number(get("mode")) as RunMode,
      permissionPolicy: Number(get("permissionPolicy")) as PermissionPolicy,
      // Kept as they are: the form does not edit these.
      agent: env?.agent,
      setupNetworkAccess: env?.setupNetworkAccess ?? NetworkAccess.UNSPECIFIED,
      idleTimeout: env?.idleTimeout,
    };
    const secrets: SecretInput[] = [];
    const name = get("secretName").trim();
    if (name) secrets.push({ $typeName: "paddock.v1.SecretInput", name, value: get("secretValue"), setupOnly: f.get("secretSetupOnly") === "on" });
    const call = env
      ? api.environments.updateEnvironment({ environment: fields, setSecrets: secrets, removeSecrets: f.getAll("removeSecret").map(String) })
      : api.environments.createEnvironment({ environment: fields, secrets });
    call.then(done, setError);
  };
  return (
    <Section title={env ? `Edit ${env.name}` : "New environment"}>
      <form class="grid" onSubmit={submit} data-testid="environment-form">
        <label>
          Name <input name="name" required defaultValue={env?.name} />
        </label>
        <label>
          Network access
          <select name="networkAccess">
            <option value={NetworkAccess.TRUSTED} selected={(env?.networkAccess ?? NetworkAccess.TRUSTED) === NetworkAccess.TRUSTED}>trusted (package registries, git hosts)</option>
            <option value={NetworkAccess.CUSTOM} selected={(env?.networkAccess ?? NetworkAccess.TRUSTED) === NetworkAccess.CUSTOM}>custom (the domains below)</option>
            <option value={NetworkAccess.FULL} selected={(env?.networkAccess ?? NetworkAccess.TRUSTED) === NetworkAccess.FULL}>full</option>
          </select>
        </label>
        <label>
          Allowed domains <input name="allowedDomains" defaultValue={env?.allowedDomains.join(", ")} placeholder="example.com, *.example.org" />
        </label>
        <label class="check">
          <input type="checkbox" name="includeTrusted" defaultChecked={env?.includeTrusted} /> plus the trusted list
        </label>
        <label class="wide">
          Environment variables (NAME=value, one a line)
          <textarea name="envVars" rows={3} defaultValue={Object.entries(env?.envVars ?? {}).map(([k, v]) => `${k}=${v}`).join("\n")} />
        </label>
        <label class="wide">
          Setup script <textarea name="setupScript" rows={3} defaultValue={env?.setupScript} />
        </label>
        <label>
          Repositories (one a line; none: any)
          <textarea name="repositories" rows={2} defaultValue={env?.repositories.join("\n")} />
        </label>
        <label>
          Default provider
          <select name="defaultProvider">
            <option value="" selected={(env?.defaultProvider ?? "") === ""}>the daemon's</option>
            <option value="local" selected={(env?.defaultProvider ?? "") === "local"}>local</option>
            <option value="docker" selected={(env?.defaultProvider ?? "") === "docker"}>docker</option>
          </select>
        </label>
        <label>
          Timeout (minutes) <input name="timeout" type="number" min="0" defaultValue={env?.timeout ? durationMs(env.timeout) / 60_000 : ""} />
        </label>
        <label>
          Image <input name="image" defaultValue={env?.image} placeholder="the daemon's" />
        </label>
        <label>
          ACP mode
          <select name="mode">
            <option value={RunMode.UNSPECIFIED} selected={(env?.mode ?? RunMode.UNSPECIFIED) === RunMode.UNSPECIFIED}>default</option>
            <option value={RunMode.BACKGROUND} selected={(env?.mode ?? RunMode.UNSPECIFIED) === RunMode.BACKGROUND}>background</option>
            <option value={RunMode.INTERACTIVE} selected={(env?.mode ?? RunMode.UNSPECIFIED) === RunMode.INTERACTIVE}>interactive</option>
          </select>
        </label>
        <label>
          ACP permission requests
          <select name="permissionPolicy">
            <option value={PermissionPolicy.UNSPECIFIED} selected={(env?.permissionPolicy ?? PermissionPolicy.UNSPECIFIED) === PermissionPolicy.UNSPECIFIED}>default</option>
            <option value={PermissionPolicy.ASK} selected={(env?.permissionPolicy ?? PermissionPolicy.UNSPECIFIED) === PermissionPolicy.ASK}>ask</option>
            <option value={PermissionPolicy.AUTO_ALLOW} selected={(env?.permissionPolicy ?? PermissionPolicy.UNSPECIFIED) === PermissionPolicy.AUTO_ALLOW}>allow all</option>
            <option value={PermissionPolicy.DENY} selected={(env?.permissionPolicy ?? PermissionPolicy.UNSPECIFIED) === PermissionPolicy.DENY}>deny all</option>
          </select>
        </label>
        <fieldset class="wide">
          <legend>Secrets (write-only: values are never shown)</legend>
          {env?.secrets.map((s) => (
            <label class="check" data-testid="secret">
              <input type="checkbox" name="removeSecret" value={s.name} /> remove{" "}
              <code>{s.name}</code>
              {s.setupOnly && " (setup only)"} <span class="muted">set {time(s.updateTime)}</span>
            </label>
          ))}
          <div class="row">
            <input name="secretName" placeholder="NAME" pattern="[A-Za-z_][A-Za-z0-9_]*" aria-label="Secret name" />
            <input name="secretValue" type="password" autoComplete="new-password" placeholder="value" aria-label="Secret value" />
            <label class="check">
              <input type="checkbox" name="secretSetupOnly" /> setup only
            </label>
          </div>
        </fieldset>
        <div class="row">
          <button type="submit">{env ? "Save" : "Create"}</button>
          <button type="button" onClick={done}>
            Close
          </button>
        </div>
        <ErrorLine error={error} />
      </form>
    </Section>
  );
}
