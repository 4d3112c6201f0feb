import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { errorText } from "./api.js";
import { statusName } from "./format.js";
import type { RunStatus } from "../src/gen/paddock/v1/task_run_pb.js";

export const Status = ({ status, phase }: { status: RunStatus; phase?: string }) => (
  <span class={`status s-${statusName(status).replace(" ", "-")}`} data-status={statusName(status)}>
    {statusName(status)}
    {phase ? ` · ${phase}` : ""}
  </span>
);

export const ErrorLine = ({ error }: { error: unknown }) => (error ? <p class="error" role="alert">{errorText(error)}</p> : null);

export function Section({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section>
      <header class="row">
        <h2>{title}</h2>
        <span class="spacer" />
        {actions}
      </header>
      {children}
    </section>
  );
}

/** Runs `load` when `deps` change; gives its value, its error, and a reload. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): { value: T | undefined; error: unknown; reload: () => void } {
  const [value, setValue] = useState<T>();
  const [error, setError] = useState<unknown>();
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    load().then(
      (v) => live && (setValue(() => v), setError(undefined)),
      (e: unknown) => live && setError(e),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  return { value, error, reload: () => setTick((t) => t + 1) };
}

/** A button that runs `action`, is disabled while it runs, and shows its error. */
export function Action({ label, action, class: cls, disabled, testid }: { label: string; action: () => Promise<unknown>; class?: string; disabled?: boolean; testid?: string }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const run = () => {
    setBusy(true);
    setError(undefined);
    action().then(
      () => setBusy(false),
      (e: unknown) => (setBusy(false), setError(e)),
    );
  };
  return (
    <span class="action">
      <button type="button" class={cls} disabled={busy || disabled} onClick={run} data-testid={testid}>
        {label}
      </button>
      {error ? <span class="error">{errorText(error)}</span> : null}
    </span>
  );
}
