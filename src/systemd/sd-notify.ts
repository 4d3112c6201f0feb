/** A datagram socket to the service manager (NOTIFY_SOCKET). */
export interface NotifySocket {
  send(message: string): void;
  close(): void;
}

/** What main.ts tells systemd: the daemon's state, and that it is alive. */
export interface ServiceNotifier {
  ready(status: string): void;
  stopping(status: string): void;
  /** Every `intervalMs` (half of WatchdogSec), while `healthy()` holds; null when no watchdog is set. */
  watchdogIntervalMs: number | null;
  watchdog(): void;
  close(): void;
}

/**
 * The service notifier for this process, or null when no service manager asked for one
 * (NOTIFY_SOCKET unset). WATCHDOG_PID, when set, must be ours (sd_watchdog_enabled(3)).
 * Throws when NOTIFY_SOCKET is set and cannot be used: a Type=notify unit would otherwise
 * wait for READY=1 until its start times out.
 */
export async function serviceNotifier(env: NodeJS.ProcessEnv, pid: number): Promise<ServiceNotifier | null> {
  const path = env.NOTIFY_SOCKET;
  if (!path) return null;
  if (!process.versions.bun) throw new Error("NOTIFY_SOCKET is set, but sd_notify needs the compiled paddock binary (Node has no unix datagram sockets)");
  const socket = (await import("./sd-notify-bun.js")).openBunNotifySocket(path);
  const usec = Number(env.WATCHDOG_USEC);
  const forUs = !env.WATCHDOG_PID || Number(env.WATCHDOG_PID) === pid;
  const watchdogIntervalMs = forUs && Number.isFinite(usec) && usec > 0 ? Math.max(1, Math.floor(usec / 2000)) : null;
  const line = (s: string) => s.replace(/\n/g, " ");
  return {
    ready: (status) => socket.send(`READY=1\nMAINPID=${pid}\nSTATUS=${line(status)}`),
    stopping: (status) => socket.send(`STOPPING=1\nSTATUS=${line(status)}`),
    watchdogIntervalMs,
    watchdog: () => socket.send("WATCHDOG=1"),
    close: () => socket.close(),
  };
}
