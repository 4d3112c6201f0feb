import { describe, expect, it } from "vitest";
import { formatHostPort, normalizeHost, parseHostPort } from "./host-name.js";

describe("host names", () => {
  it("gives one spelling: lowercase, one trailing dot dropped, IP literals canonical", () => {
    expect(normalizeHost("Allowed.TEST")).toBe("allowed.test");
    expect(normalizeHost("allowed.test.")).toBe("allowed.test");
    expect(normalizeHost("localhost")).toBe("localhost");
    expect(normalizeHost("_acme.x-1.example")).toBe("_acme.x-1.example");
    expect(normalizeHost("127.0.0.1.")).toBe("127.0.0.1");
    // getaddrinfo reads these as 127.0.0.1 too: the policy must see that address.
    expect(normalizeHost("127.1")).toBe("127.0.0.1");
    expect(normalizeHost("0x7f000001")).toBe("127.0.0.1");
    expect(normalizeHost("017700000001")).toBe("127.0.0.1");
    expect(normalizeHost("[::FFFF:127.0.0.1]")).toBe("::ffff:7f00:1");
    expect(normalizeHost("[0:0::1]")).toBe("::1");
    expect(normalizeHost("::1")).toBe("::1");
  });

  it("refuses what is not a host name", () => {
    for (const bad of ["", ".", "allowed.test..", "..allowed.test", "a..test", "allowed test", "allowed.test%00", "a/b", "a@b", "-a.test", "a-.test", "é.test", `${"a".repeat(64)}.test`, `${"a.".repeat(127)}a`, "[fe80::1%eth0]", "[1.2.3.4]", "[::1", "1.2.3.4.5", "256.1.1.1", "1.a.3.4"]) {
      expect(normalizeHost(bad), bad).toBeNull();
    }
  });

  it("reads a CONNECT target or Host header, with the default port when none is given", () => {
    expect(parseHostPort("Allowed.Test.:8443", 443)).toEqual({ host: "allowed.test", port: 8443 });
    expect(parseHostPort("allowed.test", 80)).toEqual({ host: "allowed.test", port: 80 });
    expect(parseHostPort("[::1]:8080", 80)).toEqual({ host: "::1", port: 8080 });
    expect(parseHostPort("[::1]", 443)).toEqual({ host: "::1", port: 443 });
    for (const bad of ["", ":80", "a.test:", "a.test:0", "a.test:65536", "a.test:123456", "a.test:+80", "a.test:80:80", "::1:80", "[::1]x", "a.test:8o"]) {
      expect(parseHostPort(bad, 80), bad).toBeNull();
    }
    expect(formatHostPort({ host: "::1", port: 80 })).toBe("[::1]:80");
    expect(formatHostPort({ host: "a.test", port: 443 })).toBe("a.test:443");
  });
});
