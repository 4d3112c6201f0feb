import { describe, expect, it } from "vitest";
import { addressClass } from "./address-class.js";

describe("address classes", () => {
  it("knows the IPv4 ranges a sandbox must not reach", () => {
    const cases: [string, string][] = [
      ["0.0.0.0", "unspecified"],
      ["0.1.2.3", "unspecified"],
      ["127.0.0.1", "loopback"],
      ["127.255.255.254", "loopback"],
      ["10.0.0.5", "private"],
      ["172.16.0.1", "private"],
      ["172.31.255.255", "private"],
      ["192.168.1.1", "private"],
      ["100.64.0.1", "private"],
      ["100.127.255.255", "private"],
      ["169.254.169.254", "link-local"],
      ["224.0.0.1", "multicast"],
      ["239.255.255.250", "multicast"],
      ["255.255.255.255", "reserved"],
      ["240.0.0.1", "reserved"],
      ["198.18.0.1", "reserved"],
      // Just outside the private ranges.
      ["172.15.255.255", "public"],
      ["172.32.0.0", "public"],
      ["100.63.255.255", "public"],
      ["100.128.0.0", "public"],
      ["11.0.0.1", "public"],
      ["192.169.0.1", "public"],
      ["93.184.215.14", "public"],
    ];
    for (const [ip, cls] of cases) expect(addressClass(ip), ip).toBe(cls);
  });

  it("knows the IPv6 ranges, and the IPv4 address inside mapped, NAT64 and 6to4 ones", () => {
    const cases: [string, string][] = [
      ["::", "unspecified"],
      ["::1", "loopback"],
      ["0:0:0:0:0:0:0:1", "loopback"],
      ["fc00::1", "private"],
      ["fd12:3456::1", "private"],
      ["fec0::1", "private"],
      ["fe80::1", "link-local"],
      ["fe80::1%eth0", "link-local"],
      ["febf::1", "link-local"],
      ["ff02::1", "multicast"],
      ["::ffff:127.0.0.1", "loopback"],
      ["::ffff:7f00:1", "loopback"],
      ["::ffff:10.1.2.3", "private"],
      ["::ffff:169.254.169.254", "link-local"],
      ["::ffff:93.184.215.14", "public"],
      ["64:ff9b::10.0.0.1", "private"],
      ["64:ff9b::93.184.215.14", "public"],
      ["2002:7f00:1::", "loopback"],
      ["2002:c0a8:101::1", "private"],
      ["::127.0.0.1", "reserved"],
      ["100::1", "reserved"],
      ["2606:2800:220:1:248:1893:25c8:1946", "public"],
      ["2001:4860:4860::8888", "public"],
    ];
    for (const [ip, cls] of cases) expect(addressClass(ip), ip).toBe(cls);
  });

  it("refuses to guess about something that is not an address", () => {
    expect(() => addressClass("localhost")).toThrow(/not an IP address/);
  });
});
