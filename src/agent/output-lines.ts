import { MAX_LINE_BYTES } from "./runner-protocol.js";

/**
 * Reads a child's output as lines, at the pace `ready` allows (back-pressure: while it
 * waits, the pipe fills and the writer blocks, instead of the runner's memory growing). A
 * line longer than MAX_LINE_BYTES keeps its first MAX_LINE_BYTES, with a note of how many
 * bytes were dropped. A last line without a newline is delivered at the end.
 */
export async function readLines(src: AsyncIterable<Buffer | string>, onLine: (text: string) => void, ready: () => Promise<void> | null): Promise<void> {
  let parts: Buffer[] = [];
  let kept = 0;
  let dropped = 0;
  const take = (piece: Buffer) => {
    const room = MAX_LINE_BYTES - kept;
    if (room > 0) {
      const part = piece.length > room ? piece.subarray(0, room) : piece;
      parts.push(part);
      kept += part.length;
    }
    dropped += Math.max(0, piece.length - Math.max(room, 0));
  };
  const end = () => {
    let text = Buffer.concat(parts).toString("utf8");
    if (text.endsWith("\r")) text = text.slice(0, -1);
    if (dropped > 0) text += ` [paddock: ${dropped} more bytes of this line dropped]`;
    parts = [];
    kept = 0;
    dropped = 0;
    onLine(text);
  };
  for await (const raw of src) {
    const chunk = typeof raw === "string" ? Buffer.from(raw) : raw;
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl >= 0; nl = chunk.indexOf(10, start)) {
      take(chunk.subarray(start, nl));
      end();
      start = nl + 1;
    }
    if (start < chunk.length) take(chunk.subarray(start));
    const wait = ready();
    if (wait) await wait;
  }
  if (kept > 0 || dropped > 0) end();
}
