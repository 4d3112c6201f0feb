import { isIPv4, isIPv6 } from "node:net";

export interface HostPort {
  /** Normalised: see normalizeHost. */
  host: string;
  port: number;
}

const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;
// WHATWG URL parsing reads a name whose last label is a number (decimal, octal or hex)
// as an IPv4 address, and so does getaddrinfo: "127.1" and "0x7f000001" are 127.0.0.1.
const NUMERIC_LABEL = /^(0x[0-9a-f]*|[0-9]+)$/;

/**
 * The one spelling of a host that the policy, the host map and the resolver all see:
 * lowercase, one trailing dot removed, IP literals in canonical form (IPv6 without
 * brackets). Null when it is not a host name or IP literal (empty labels, odd characters).
 */
export function normalizeHost(raw: string): string | null {
  if (raw.startsWith("[") && raw.endsWith("]")) return canonicalIPv6(raw.slice(1, -1));
  if (isIPv6(raw)) return canonicalIPv6(raw);
  const name = raw.toLowerCase().replace(/\.$/, "");
  if (name.length === 0 || name.length > 253) return null;
  const labels = name.split(".");
  if (NUMERIC_LABEL.test(labels.at(-1)!)) {
    if (!labels.every((l) => NUMERIC_LABEL.test(l))) return null;
    try {
      const ip = new URL(`http://${name}/`).hostname;
      return isIPv4(ip) ? ip : null;
    } catch {
      return null;
    }
  }
  return labels.every((l) => LABEL.test(l)) ? name : null;
}

/** Null for zone ids ("fe80::1%eth0"): a sandbox has no business naming an interface. */
function canonicalIPv6(ip: string): string | null {
  if (!isIPv6(ip) || ip.includes("%")) return null;
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

/**
 * "host", "host:port", "[v6]" or "[v6]:port" (a CONNECT target or a Host header) as a
 * normalised host and a port in 1-65535; null when either part is malformed.
 */
export function parseHostPort(authority: string, defaultPort: number): HostPort | null {
  const m = /^(\[[^\]]*\]|[^:[\]]*)(?::([0-9]{1,5}))?$/.exec(authority);
  if (!m) return null;
  const host = normalizeHost(m[1]!);
  const port = m[2] === undefined ? defaultPort : Number(m[2]);
  if (host === null || port < 1 || port > 65535) return null;
  return { host, port };
}

/** For messages: "example.com:443", "[::1]:80". */
export function formatHostPort({ host, port }: HostPort): string {
  return `${isIPv6(host) ? `[${host}]` : host}:${port}`;
}
