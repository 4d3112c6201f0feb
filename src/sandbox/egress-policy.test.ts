import { describe, expect, it } from "vitest";
import { allowedBy, parseAllowedDomain, type NetworkPolicy } from "./egress-policy.js";

const custom = (...allowedDomains: string[]): NetworkPolicy => ({ access: "custom", allowedDomains, includeTrusted: false });

describe("egress policy", () => {
  it("reads entries with and without a port", () => {
    expect(parseAllowedDomain("Git.Example.com")).toEqual({ pattern: "git.example.com", ports: [80, 443] });
    expect(parseAllowedDomain("git.example.com:8443")).toEqual({ pattern: "git.example.com", ports: [8443] });
    expect(parseAllowedDomain("*.corp.test:8080")).toEqual({ pattern: "*.corp.test", ports: [8080] });
    expect(parseAllowedDomain("git.example.com:0")).toMatch(/port must be a number from 1 to 65535/);
    expect(parseAllowedDomain("git.example.com:65536")).toMatch(/port must be a number from 1 to 65535/);
    expect(parseAllowedDomain("git.example.com:080")).toMatch(/port must be/);
    expect(parseAllowedDomain("git.example.com:")).toMatch(/port must be/);
    expect(parseAllowedDomain("10.0.0.5")).toMatch(/is not a domain/);
    expect(parseAllowedDomain("example.com.")).toMatch(/is not a domain/);
  });

  it("allows 80 and 443 for a bare name, and only the listed port for name:port", () => {
    const p = custom("allowed.test", "git.example.com:8443", "*.corp.test:8080");
    expect(allowedBy(p, "allowed.test", 443)).toBe(true);
    expect(allowedBy(p, "allowed.test", 80)).toBe(true);
    expect(allowedBy(p, "allowed.test", 22)).toBe(false);
    expect(allowedBy(p, "git.example.com", 8443)).toBe(true);
    expect(allowedBy(p, "git.example.com", 443)).toBe(false);
    expect(allowedBy(p, "a.corp.test", 8080)).toBe(true);
    expect(allowedBy(p, "corp.test", 8080)).toBe(false);
    expect(allowedBy(p, "other.test", 443)).toBe(false);
  });

  it("gives trusted hosts 80 and 443 only; full allows any name and port", () => {
    expect(allowedBy({ access: "trusted", allowedDomains: [], includeTrusted: false }, "registry.npmjs.org", 443)).toBe(true);
    expect(allowedBy({ access: "trusted", allowedDomains: [], includeTrusted: false }, "registry.npmjs.org", 22)).toBe(false);
    expect(allowedBy({ access: "custom", allowedDomains: ["a.test:8080"], includeTrusted: true }, "github.com", 443)).toBe(true);
    expect(allowedBy({ access: "full", allowedDomains: [], includeTrusted: false }, "anything.test", 6379)).toBe(true);
  });
});
