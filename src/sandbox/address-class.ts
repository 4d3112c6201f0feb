import { isIPv4, isIPv6 } from "node:net";

/** What an IP address reaches; only "public" is the internet. */
export type AddressClass = "public" | "loopback" | "private" | "link-local" | "unspecified" | "multicast" | "reserved";

type V4Range = [base: string, bits: number, cls: AddressClass];

const V4_RANGES: readonly V4Range[] = [
  ["0.0.0.0", 8, "unspecified"],
  ["127.0.0.0", 8, "loopback"],
  ["10.0.0.0", 8, "private"],
  ["172.16.0.0", 12, "private"],
  ["192.168.0.0", 16, "private"],
  // Carrier-grade NAT space: often a provider's or a VPN's internal network.
  ["100.64.0.0", 10, "private"],
  // Cloud metadata services live here (169.254.169.254).
  ["169.254.0.0", 16, "link-local"],
  ["224.0.0.0", 4, "multicast"],
  // Future use and the broadcast address; IETF protocol assignments; benchmarking nets.
  ["240.0.0.0", 4, "reserved"],
  ["192.0.0.0", 24, "reserved"],
  ["198.18.0.0", 15, "reserved"],
];

function v4Number(ip: string): number {
  return ip.split(".").reduce((n, part) => n * 256 + Number(part), 0);
}

function classifyV4(n: number): AddressClass {
  for (const [base, bits, cls] of V4_RANGES) {
    const size = 2 ** (32 - bits);
    if (Math.floor(n / size) === Math.floor(v4Number(base) / size)) return cls;
  }
  return "public";
}

/** The eight 16-bit groups of an IPv6 address (which may end in a dotted IPv4 part). */
function v6Groups(ip: string): number[] {
  let s = ip;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    const n = v4Number(dotted[1]!);
    s = `${s.slice(0, -dotted[1]!.length)}${Math.floor(n / 65536).toString(16)}:${(n % 65536).toString(16)}`;
  }
  const [head = "", tail] = s.split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill("0"), ...t];
  return groups.map((g) => parseInt(g, 16));
}

function classifyV6(g: number[]): AddressClass {
  const [g0 = 0, g1 = 0, g2 = 0, g3 = 0, g4 = 0, g5 = 0, g6 = 0, g7 = 0] = g;
  const embedded = g6 * 65536 + g7;
  const zeroTo = (n: number) => g.slice(0, n).every((x) => x === 0);
  if (zeroTo(8)) return "unspecified";
  if (zeroTo(7) && g7 === 1) return "loopback";
  // IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) reach the IPv4 address inside.
  if (zeroTo(5) && g5 === 0xffff) return classifyV4(embedded);
  if (g0 === 0x64 && g1 === 0xff9b && g2 === 0 && g3 === 0 && g4 === 0 && g5 === 0) return classifyV4(embedded);
  // 6to4 (2002:AABB:CCDD::) carries an IPv4 address in its second and third groups.
  if (g0 === 0x2002) return classifyV4(g1 * 65536 + g2);
  // IPv4-compatible (deprecated), local-use NAT64, discard-only.
  if (zeroTo(6)) return "reserved";
  if (g0 === 0x64 && g1 === 0xff9b && g2 === 1) return "private";
  if (g0 === 0x100 && g1 === 0 && g2 === 0 && g3 === 0) return "reserved";
  if ((g0 & 0xfe00) === 0xfc00) return "private"; // unique local fc00::/7
  if ((g0 & 0xffc0) === 0xfec0) return "private"; // site-local (deprecated) fec0::/10
  if ((g0 & 0xffc0) === 0xfe80) return "link-local";
  if ((g0 & 0xff00) === 0xff00) return "multicast";
  return "public";
}

/** Where an IP address points: the internet, or somewhere a sandbox must not reach. */
export function addressClass(ip: string): AddressClass {
  if (isIPv4(ip)) return classifyV4(v4Number(ip));
  if (isIPv6(ip)) return classifyV6(v6Groups(ip.replace(/%.*$/, "")));
  throw new Error(`${JSON.stringify(ip)} is not an IP address`);
}
