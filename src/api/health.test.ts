import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, test } from "vitest";
import { observeStream } from "../../test/stream-observer.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { createHealth, ServingStatus } from "./health.js";

/**
 * An in-memory Health server that reports on its first Watch stream: `pulled`
 * settles once the transport asks the handler for a second message, `ended` once
 * the handler has finished. The in-memory transport pulls lazily, so without
 * `pulled` a test could cancel before the handler is running at all.
 */
function setup() {
  const health = createHealth();
  const observed = observeStream();
  const transport = createRouterTransport((router) => health.register(router), {
    router: { interceptors: [observed.interceptor] },
  });
  return { health, client: createClient(Health, transport), pulled: observed.pulled, ended: observed.ended };
}

describe("Health", () => {
  test("the server as a whole starts SERVING", async () => {
    const { client } = setup();
    await expect(client.check({ service: "" })).resolves.toMatchObject({ status: ServingStatus.SERVING });
  });

  test("Check of an unknown service is NOT_FOUND", async () => {
    const { client } = setup();
    const err = await client.check({ service: "paddock.v1.Nope" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.NotFound);
  });

  test("Check and List report statuses set later", async () => {
    const { health, client } = setup();
    health.setStatus("paddock.v1.TaskRunService", ServingStatus.NOT_SERVING);
    await expect(client.check({ service: "paddock.v1.TaskRunService" })).resolves.toMatchObject({
      status: ServingStatus.NOT_SERVING,
    });
    const list = await client.list({});
    expect(Object.keys(list.statuses).sort()).toEqual(["", "paddock.v1.TaskRunService"]);
    expect(list.statuses["paddock.v1.TaskRunService"]?.status).toBe(ServingStatus.NOT_SERVING);
  });

  test("Watch streams the current status, then each change", async () => {
    const { health, client } = setup();
    const watch = client.watch({ service: "paddock.v1.TaskService" })[Symbol.asyncIterator]();
    expect((await watch.next()).value).toMatchObject({ status: ServingStatus.SERVICE_UNKNOWN });
    health.setStatus("paddock.v1.TaskService", ServingStatus.SERVING);
    expect((await watch.next()).value).toMatchObject({ status: ServingStatus.SERVING });
    health.setStatus("paddock.v1.TaskService", ServingStatus.SERVING); // no change, no message
    health.setStatus("paddock.v1.TaskService", ServingStatus.NOT_SERVING);
    expect((await watch.next()).value).toMatchObject({ status: ServingStatus.NOT_SERVING });
    await watch.return?.();
  });

  test("shutdown reports NOT_SERVING, ends Watch and freezes statuses", async () => {
    const { health, client, ended } = setup();
    const watch = client.watch({ service: "" })[Symbol.asyncIterator]();
    expect((await watch.next()).value).toMatchObject({ status: ServingStatus.SERVING });
    health.shutdown();
    expect((await watch.next()).value).toMatchObject({ status: ServingStatus.NOT_SERVING });
    expect((await watch.next()).done).toBe(true);
    await ended;
    health.setStatus("", ServingStatus.SERVING);
    await expect(client.check({ service: "" })).resolves.toMatchObject({ status: ServingStatus.NOT_SERVING });
  });

  test("Watch stops on the server when the client cancels", async () => {
    const { client, pulled, ended } = setup();
    const abort = new AbortController();
    const watch = client.watch({ service: "" }, { signal: abort.signal })[Symbol.asyncIterator]();
    expect((await watch.next()).value).toMatchObject({ status: ServingStatus.SERVING });
    const second = watch.next();
    await pulled; // the handler is now waiting for a change that never comes
    abort.abort();
    await expect(second).rejects.toMatchObject({ code: Code.Canceled });
    await ended;
  });
});
