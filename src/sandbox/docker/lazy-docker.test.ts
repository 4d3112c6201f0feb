import { existsSync } from "node:fs";
import Docker from "dockerode";
import { describe, expect, it } from "vitest";
import { lazyDocker } from "./lazy-docker.js";

const SOCKET = process.env.PADDOCK_DOCKER_SOCKET ?? "/var/run/docker.sock";

describe.skipIf(!existsSync(SOCKET))("lazyDocker", () => {
  it("answers what dockerode answers, and fails the way it fails, for its own GETs and the rest", async () => {
    const lazy = lazyDocker(SOCKET);
    const real = new Docker({ socketPath: SOCKET });
    // Read-only calls only: the engine is shared.
    const filters = { label: ["paddock.instance"] };
    const ids = (xs: { Id: string }[]) => xs.map((x) => x.Id).sort();
    expect(ids(await lazy.listContainers({ all: true, filters }))).toEqual(ids(await real.listContainers({ all: true, filters })));
    expect(ids(await lazy.listImages({ filters: { dangling: ["false"] } }))).toEqual(ids(await real.listImages({ filters: { dangling: ["false"] } })));
    const bridge = (await lazy.getNetwork("bridge").inspect()) as { Name: string };
    expect(bridge.Name).toBe("bridge");
    // A 404 carries statusCode, as dockerode's errors do (callers tell "not found" by it).
    await expect(lazy.getNetwork("paddock-no-such-network").inspect()).rejects.toMatchObject({ statusCode: 404 });
    await expect(lazy.getContainer("paddock-no-such-container").inspect()).rejects.toMatchObject({ statusCode: 404 });
    await expect(lazy.getImage("paddock-no-such-image:none").inspect()).rejects.toMatchObject({ statusCode: 404 });
    expect(((await lazy.info()) as { ID: string }).ID).toBe(((await real.info()) as { ID: string }).ID);
  });
});
