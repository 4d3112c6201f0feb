import { dlopen, FFIType } from "bun:ffi";
import type { NotifySocket } from "./sd-notify.js";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
/** sizeof(sockaddr_un.sun_path) on Linux. */
const SUN_PATH_MAX = 108;

/** glibc, then musl: the binary runs on either. */
const LIBCS = ["libc.so.6", `libc.musl-${process.arch === "arm64" ? "aarch64" : "x86_64"}.so.1`];

function openLibc() {
  const symbols = {
    socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    sendto: { args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i64 },
    close: { args: [FFIType.i32], returns: FFIType.i32 },
  };
  let last: unknown;
  for (const name of LIBCS) {
    try {
      return dlopen(name, symbols).symbols;
    } catch (error) {
      last = error;
    }
  }
  throw new Error(`cannot load the C library for sd_notify: ${(last as Error).message}`);
}

/**
 * sd_notify under Bun: neither Node's nor Bun's APIs speak unix datagrams, so the three
 * libc calls are made through bun:ffi (part of the runtime, so it works in the compiled
 * binary). One socket for the daemon's life; each message is one sendto.
 */
export function openBunNotifySocket(path: string): NotifySocket {
  // "@name" is a socket in the abstract namespace: a leading NUL, no terminating one.
  const name = path.startsWith("@") ? Buffer.concat([Buffer.from([0]), Buffer.from(path.slice(1))]) : Buffer.from(path + "\0");
  if (name.length > SUN_PATH_MAX) throw new Error(`NOTIFY_SOCKET ${path} is longer than a unix socket address can be`);
  const address = Buffer.alloc(2 + SUN_PATH_MAX);
  address.writeUInt16LE(AF_UNIX, 0);
  name.copy(address, 2);
  const libc = openLibc();
  const fd = Number(libc.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (fd < 0) throw new Error("socket(AF_UNIX, SOCK_DGRAM) failed");
  return {
    send(message: string): void {
      const data = Buffer.from(message);
      const sent = Number(libc.sendto(fd, data, data.length, MSG_NOSIGNAL, address, 2 + name.length));
      if (sent !== data.length) throw new Error(`sending to NOTIFY_SOCKET ${path} failed`);
    },
    close(): void {
      libc.close(fd);
    },
  };
}
