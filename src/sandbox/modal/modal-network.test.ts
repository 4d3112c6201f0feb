import { describe, expect, it } from "vitest";
import { modalNetworkOf } from "./modal-network.js";

describe("modalNetworkOf", () => {
  it("full is open", () => {
    expect(modalNetworkOf({ access: "full", allowedDomains: [], includeTrusted: false })).toMatchObject({ allowedDomains: null });
  });

  it("custom names become the domain allowlist, wildcards kept, ports 80/443 folded into Modal's HTTPS-only", () => {
    const n = modalNetworkOf({ access: "custom", allowedDomains: ["api.example.com", "*.cdn.example.com", "x.example.com:443"], includeTrusted: false });
    expect(n).toMatchObject({ allowedDomains: ["*.cdn.example.com", "api.example.com", "x.example.com"] });
    expect(typeof n === "object" && n.describe).toMatch(/port 443.*plain HTTP is blocked/);
  });

  it("trusted, or custom plus trusted, includes the reviewed list", () => {
    const n = modalNetworkOf({ access: "custom", allowedDomains: ["api.example.com"], includeTrusted: true });
    expect(typeof n === "object" && n.allowedDomains).toEqual(expect.arrayContaining(["api.example.com", "github.com", "pypi.org"]));
  });

  it("custom with nothing allowed is an empty allowlist (no outbound at all), not open", () => {
    expect(modalNetworkOf({ access: "custom", allowedDomains: [], includeTrusted: false })).toMatchObject({ allowedDomains: [], describe: "no outbound access" });
  });

  it("a port Modal cannot express is refused, naming the entry", () => {
    expect(modalNetworkOf({ access: "custom", allowedDomains: ["git.corp.test:22"], includeTrusted: false })).toMatch(/"git\.corp\.test:22" opens port 22/);
    expect(modalNetworkOf({ access: "custom", allowedDomains: ["a.test:8080"], includeTrusted: true })).toMatch(/port 8080/);
  });
});
