import type Docker from "dockerode";
import { request } from "node:http";

/**
 * A dockerode client that loads dockerode on its first real use. What an idle daemon asks
 * the engine — its containers (the reaper, every minute), its snapshot images and whether
 * a network exists (at start) — is a plain GET over the socket here; everything else
 * loads dockerode once and goes to it. dockerode, docker-modem and their dependencies
 * cost an idle daemon several MiB of RSS (npm run bench -- rss).
 *
 * Errors carry what dockerode's do (statusCode, reason, json), so callers telling a 404
 * or a 409 apart see no difference.
 */
export function lazyDocker(socketPath: string): Docker {
  let loaded: Promise<Docker> | null = null;
  const load = (): Promise<Docker> => (loaded ??= import("dockerode").then((m) => new m.default({ socketPath })));
  const get = (path: string): Promise<unknown> => engineGet(socketPath, path);
  /** An object of dockerode's (a container, an image, a network) whose methods load dockerode first. */
  const deferred = (make: (d: Docker) => object, own: Record<string, unknown> = {}): object =>
    new Proxy(
      {},
      {
        get: (_, method) =>
          method === "then"
            ? undefined
            : typeof method === "string" && method in own
              ? own[method]
              : (...args: unknown[]) =>
                load().then((d) => {
                  const target = make(d) as Record<string | symbol, (...a: unknown[]) => unknown>;
                  return target[method]!(...args);
                }),
      },
    );
  const listQuery = (o: { all?: boolean; filters?: unknown } = {}): string => {
    const q = new URLSearchParams();
    if (o.all) q.set("all", "true");
    if (o.filters) q.set("filters", typeof o.filters === "string" ? o.filters : JSON.stringify(o.filters));
    const s = q.toString();
    return s ? `?${s}` : "";
  };
  const own: Record<string, unknown> = {
    listContainers: (o?: { all?: boolean; filters?: unknown }) => get(`/containers/json${listQuery(o)}`),
    listImages: (o?: { all?: boolean; filters?: unknown }) => get(`/images/json${listQuery(o)}`),
    getNetwork: (name: string) =>
      deferred((d) => d.getNetwork(name), { inspect: () => get(`/networks/${encodeURIComponent(name)}`) }),
  };
  return new Proxy({} as Docker, {
    get(_, key) {
      if (key === "then") return undefined; // not a thenable: `await lazyDocker(…)` is the client itself
      if (typeof key === "string" && key in own) return own[key];
      if (key === "getContainer" || key === "getImage" || key === "getVolume" || key === "getExec" || key === "getService") {
        return (name: string) => deferred((d) => (d as unknown as Record<string, (n: string) => object>)[key]!(name));
      }
      return (...args: unknown[]) => load().then((d) => (d as unknown as Record<string | symbol, (...a: unknown[]) => unknown>)[key]!(...args));
    },
  });
}

/** GET `path` from the Engine API over its unix socket; JSON back, or an error shaped like dockerode's. */
function engineGet(socketPath: string, path: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: "GET", headers: { host: "docker" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let json: unknown = null;
        try {
          json = text ? JSON.parse(text) : null;
        } catch {
          json = text;
        }
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) return resolve(json);
        const message = (json as { message?: string } | null)?.message ?? text;
        const reason = status === 404 ? "no such object" : status === 500 ? "server error" : "unexpected";
        reject(Object.assign(new Error(`(HTTP code ${status}) ${reason} - ${message} `), { statusCode: status, reason, json }));
      });
    });
    req.on("error", reject);
    req.end();
  });
}
