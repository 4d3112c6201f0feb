import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { readLines } from "./output-lines.js";
import { MAX_LINE_BYTES } from "./runner-protocol.js";

async function linesOf(chunks: (string | Buffer)[], ready: () => Promise<void> | null = () => null): Promise<string[]> {
  const out: string[] = [];
  const src = new PassThrough();
  const done = readLines(src, (t) => out.push(t), ready);
  for (const c of chunks) src.write(c);
  src.end();
  await done;
  return out;
}

describe("readLines", () => {
  it("splits on newlines across chunks, strips CR, and delivers a last line without a newline", async () => {
    expect(await linesOf(["a\r\nb", "c\n", "\nlast"])).toEqual(["a", "bc", "", "last"]);
  });

  it("keeps the first MAX_LINE_BYTES of a longer line and says exactly how many bytes were dropped", async () => {
    const big = Buffer.alloc(MAX_LINE_BYTES + 12345, "x");
    const out = await linesOf([big.subarray(0, 1000), big.subarray(1000), "\nnext\n"]);
    expect(out).toHaveLength(2);
    expect(out[0]).toBe("x".repeat(MAX_LINE_BYTES) + " [paddock: 12345 more bytes of this line dropped]");
    expect(out[1]).toBe("next");
  });

  it("reads no further while the consumer is not ready (back-pressure)", async () => {
    const src = new PassThrough({ highWaterMark: 16 });
    const out: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let waiting = true;
    const done = readLines(src, (t) => out.push(t), () => (waiting ? gate : null));
    src.write("one\n");
    await new Promise((r) => setImmediate(r));
    expect(out).toEqual(["one"]);
    // While the gate is shut, the source fills up and refuses more: a writer would block.
    let accepted = true;
    for (let i = 0; i < 100 && accepted; i++) accepted = src.write(`line ${i}\n`);
    expect(accepted).toBe(false);
    expect(out).toEqual(["one"]);
    waiting = false;
    release();
    src.end();
    await done;
    expect(out.length).toBeGreaterThan(1);
  });
});
