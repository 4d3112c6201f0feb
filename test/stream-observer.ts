import type { Interceptor } from "@connectrpc/connect";

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * An interceptor that reports when the transport has pulled a server stream past its
 * first message (`pulled`) and when the handler has finished (`ended`). The in-memory
 * transport pulls lazily, so tests wait on these instead of sleeping.
 */
export function observeStream() {
  const pulled = deferred();
  const ended = deferred();
  const interceptor: Interceptor = (next) => async (req) => {
    const res = await next(req);
    if (!res.stream) return res;
    const message = res.message;
    return {
      ...res,
      message: (async function* () {
        try {
          for await (const m of message) {
            yield m;
            pulled.resolve();
          }
        } finally {
          ended.resolve();
        }
      })(),
    };
  };
  return { interceptor, pulled: pulled.promise, ended: ended.promise };
}
