import { closeSync, existsSync, fchmodSync, fstatSync, ftruncateSync, openSync, readSync, writeSync } from "node:fs";
import { MAX_EVENT_BYTES_PER_RESPONSE, MAX_EVENTS_PER_RESPONSE, type RunnerEvent } from "./runner-protocol.js";

type NewEvent = RunnerEvent extends infer E ? (E extends RunnerEvent ? Omit<E, "seq" | "time"> : never) : never;
export type { NewEvent };

/**
 * Bun's collector lets a flood's short-lived strings pile up to hundreds of MiB before it
 * runs; a cheap collection every so many bytes written keeps the runner small.
 */
const GC_EVERY_BYTES = 8 * 1024 * 1024;
const bunGc = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun?.gc;
function collectGarbage(): void {
  bunGc?.(true);
}

/** Every this many events the file offset is remembered: memory stays small at any volume. */
const INDEX_EVERY = 256;
/** Events kept in memory for the daemon's usual read, the newest ones, by count and bytes. */
const TAIL = 512;
const TAIL_BYTES = 4 * 1024 * 1024;

/**
 * The runner's numbered events, in an append-only JSON-lines file that is the record of
 * truth (it survives the runner). Memory holds a sparse offset index and the newest events
 * only; older ones are read back from the file. Appends are batched per event-loop turn,
 * and `backlog` tells producers when to pause (back-pressure instead of growing memory).
 */
/** A stored line's seq: read off its start, or by parsing a line an older runner wrote. */
function seqOf(line: string): number | null {
  const m = /^\{"seq":(\d+),/.exec(line);
  if (m) return Number(m[1]);
  try {
    return (JSON.parse(line) as RunnerEvent).seq;
  } catch {
    return null;
  }
}

export class EventLog {
  private readonly fd: number;
  private count = 0;
  private size = 0;
  /** offsets[i] = byte offset of event i*INDEX_EVERY+1. */
  private readonly offsets: number[] = [];
  private readonly tail: RunnerEvent[] = [];
  private tailBytes = 0;
  private pending: string[] = [];
  private pendingBytes = 0;
  private flushScheduled = false;
  private sinceGc = 0;
  private readonly drained = new Set<() => void>();
  private readonly appended = new Set<() => void>();
  lastExit: Extract<RunnerEvent, { kind: "exit" }> | null = null;

  constructor(path: string) {
    const existed = existsSync(path);
    this.fd = openSync(path, "a+", 0o600);
    fchmodSync(this.fd, 0o600);
    if (existed) this.scan();
  }

  get lastSeq(): number {
    return this.count;
  }

  /** Bytes waiting to be written; producers pause above a threshold. */
  get backlog(): number {
    return this.pendingBytes;
  }

  append(e: NewEvent): RunnerEvent {
    // seq first in every line: a read from the file finds it without parsing the line.
    const event = { seq: this.count + 1, time: Date.now(), ...e } as RunnerEvent;
    const line = JSON.stringify(event) + "\n";
    if ((event.seq - 1) % INDEX_EVERY === 0) this.offsets.push(this.size + this.pendingBytes);
    this.count = event.seq;
    this.pending.push(line);
    this.pendingBytes += Buffer.byteLength(line);
    this.keep(event, line.length);
    if (event.kind === "exit") {
      this.lastExit = event;
      this.flush(); // an exit is written before anyone is told of it
    } else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
    for (const w of this.appended) w();
    this.appended.clear();
    return event;
  }

  private readonly tailSizes: number[] = [];
  private keep(e: RunnerEvent, bytes: number): void {
    this.tail.push(e);
    this.tailSizes.push(bytes);
    this.tailBytes += bytes;
    while (this.tail.length > 1 && (this.tail.length > TAIL || this.tailBytes > TAIL_BYTES)) {
      this.tail.shift();
      this.tailBytes -= this.tailSizes.shift()!;
    }
  }

  flush(): void {
    this.flushScheduled = false;
    if (this.pending.length === 0) return;
    const buf = Buffer.from(this.pending.join(""));
    this.pending = [];
    let off = 0;
    while (off < buf.length) off += writeSync(this.fd, buf, off, buf.length - off);
    this.size += buf.length;
    this.pendingBytes = 0;
    this.sinceGc += buf.length;
    if (this.sinceGc > GC_EVERY_BYTES) {
      this.sinceGc = 0;
      collectGarbage();
    }
    for (const d of this.drained) d();
    this.drained.clear();
  }

  /** Resolves once what is pending has been written. */
  whenDrained(): Promise<void> {
    if (this.pendingBytes === 0) return Promise.resolve();
    return new Promise((r) => this.drained.add(r));
  }

  /** Resolves at the next append (or never, if none comes: race it with a timer). */
  nextAppend(): { promise: Promise<void>; cancel: () => void } {
    let done!: () => void;
    const promise = new Promise<void>((r) => (done = r));
    this.appended.add(done);
    return { promise, cancel: () => (this.appended.delete(done), done()) };
  }

  /** Events after `afterSeq`, at most a response's worth by count and bytes. */
  after(afterSeq: number): RunnerEvent[] {
    return JSON.parse(this.afterJson(afterSeq)) as RunnerEvent[];
  }

  /**
   * The same as a JSON array's text: from the file, lines go out as they are (a daemon
   * catching up with a flood costs the runner no parse and no re-serialisation).
   */
  afterJson(afterSeq: number): string {
    if (afterSeq >= this.count) return "[]";
    const first = this.tail[0];
    if (first && afterSeq + 1 >= first.seq) return JSON.stringify(this.bounded(this.tail.slice(afterSeq + 1 - first.seq)));
    this.flush();
    const slot = Math.floor(afterSeq / INDEX_EVERY);
    const out: string[] = [];
    let bytes = 0;
    let offset = this.offsets[slot] ?? 0;
    let carry = "";
    const buf = Buffer.alloc(1024 * 1024);
    while (offset < this.size && out.length < MAX_EVENTS_PER_RESPONSE && bytes < MAX_EVENT_BYTES_PER_RESPONSE) {
      const n = readSync(this.fd, buf, 0, buf.length, offset);
      if (n <= 0) break;
      offset += n;
      const lines = (carry + buf.subarray(0, n).toString("utf8")).split("\n");
      carry = lines.pop() ?? "";
      for (const line of lines) {
        if (!line) continue;
        const seq = seqOf(line);
        if (seq === null || seq <= afterSeq) continue; // null: a line cut by a crash mid-write
        out.push(line);
        bytes += line.length;
        if (out.length >= MAX_EVENTS_PER_RESPONSE || bytes >= MAX_EVENT_BYTES_PER_RESPONSE) break;
      }
    }
    return `[${out.join(",")}]`;
  }

  private bounded(events: RunnerEvent[]): RunnerEvent[] {
    let bytes = 0;
    let n = 0;
    for (const e of events) {
      if (n >= MAX_EVENTS_PER_RESPONSE || (n > 0 && bytes >= MAX_EVENT_BYTES_PER_RESPONSE)) break;
      bytes += e.kind === "log" ? e.text.length + 64 : 64;
      n++;
    }
    return events.slice(0, n);
  }

  /** A restarted runner: rebuild the index and tail from the file, a block at a time. */
  private scan(): void {
    const total = fstatSync(this.fd).size;
    const buf = Buffer.alloc(1024 * 1024);
    let offset = 0;
    let lineStart = 0;
    let carry = Buffer.alloc(0);
    while (offset < total) {
      const n = readSync(this.fd, buf, 0, buf.length, offset);
      if (n <= 0) break;
      let chunk = Buffer.concat([carry, buf.subarray(0, n)]);
      let nl: number;
      while ((nl = chunk.indexOf(10)) >= 0) {
        const line = chunk.subarray(0, nl).toString("utf8");
        chunk = chunk.subarray(nl + 1);
        const start = lineStart;
        lineStart += nl + 1;
        let e: RunnerEvent;
        try {
          e = JSON.parse(line) as RunnerEvent;
        } catch {
          continue; // a line cut by a crash mid-write
        }
        if (e.seq !== this.count + 1) continue;
        if ((e.seq - 1) % INDEX_EVERY === 0) this.offsets.push(start);
        this.count = e.seq;
        this.keep(e, line.length);
        if (e.kind === "exit") this.lastExit = e;
      }
      carry = chunk;
      offset += n;
    }
    this.size = total;
    // A line cut by a crash mid-write is dropped, so the next event starts a line of its own
    // and every line in the file is whole.
    if (carry.length > 0) {
      ftruncateSync(this.fd, lineStart);
      this.size = lineStart;
    }
  }

  close(): void {
    this.flush();
    closeSync(this.fd);
  }
}
