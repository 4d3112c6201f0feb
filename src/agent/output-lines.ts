import { StringDecoder } from "node:string_decoder";
import { MAX_LINE_BYTES } from "./runner-protocol.js";

/**
 * Reads a child's output as lines, at the pace `ready` allows (back-pressure: while it
 * waits, the pipe fills and the writer blocks, instead of the runner's memory growing). A
 * line longer than MAX_LINE_BYTES keeps its first MAX_LINE_BYTES, with a note of how many
 * bytes were dropped. A last line without a newline is delivered at the end. Chunks are
 * decoded once and split as strings: a flood allocates little per line.
 */
export async function readLines(src: AsyncIterable<Buffer | string>, onLine: (text: string) => void, ready: () => Promise<void> | null): Promise<void> {
  const decoder = new StringDecoder("utf8");
  let partial = "";
  /** Bytes of the current line past the cap: once non-zero, the line only counts. */
  let dropped = 0;
  const add = (piece: string) => {
    if (dropped > 0) {
      dropped += Buffer.byteLength(piece);
      return;
    }
    partial += piece;
    if (partial.length <= MAX_LINE_BYTES / 4) return; // 4 bytes per character at most
    const bytes = Buffer.from(partial);
    if (bytes.length <= MAX_LINE_BYTES) return;
    dropped = bytes.length - MAX_LINE_BYTES;
    partial = new StringDecoder("utf8").write(bytes.subarray(0, MAX_LINE_BYTES));
  };
  const end = () => {
    let text = partial;
    if (text.endsWith("\r")) text = text.slice(0, -1);
    if (dropped > 0) text += ` [paddock: ${dropped} more bytes of this line dropped]`;
    partial = "";
    dropped = 0;
    onLine(text);
  };
  for await (const raw of src) {
    const chunk = typeof raw === "string" ? raw : decoder.write(raw);
    let start = 0;
    for (let nl = chunk.indexOf("\n"); nl >= 0; nl = chunk.indexOf("\n", start)) {
      if (partial || dropped) add(chunk.slice(start, nl));
      else partial = chunk.slice(start, nl); // the common case: a whole line in one chunk
      if (partial.length > MAX_LINE_BYTES / 4 && !dropped) add("");
      end();
      start = nl + 1;
    }
    if (start < chunk.length) add(chunk.slice(start));
    const wait = ready();
    if (wait) await wait;
  }
  const rest = decoder.end();
  if (rest) add(rest);
  if (partial || dropped > 0) end();
}
