import { describe, expect, it } from "vitest";
import { loadConfig, parseDuration } from "./config.js";

describe("config", () => {
  it("has defaults that work on a plain box", () => {
    const c = loadConfig({ HOME: "/home/u" }, {});
    expect(c).toMatchObject({
      dataDir: "/home/u/.local/share/paddock",
      listen: { host: "127.0.0.1", port: 7777 },
      socket: "/home/u/.local/share/paddock/paddock.sock",
      defaultProvider: "local",
      defaultTimeout: 3_600_000,
      maxConcurrentRuns: 4,
      idleTimeout: 30_000,
      headersTimeout: 10_000,
      maxConnections: 1000,
      maxConnectionsPerAddress: 100,
      keepaliveInterval: 30_000,
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it("takes flags over env over file", () => {
    const c = loadConfig({ PADDOCK_LISTEN: "0.0.0.0:9000", PADDOCK_MAX_CONCURRENT_RUNS: "8" }, { listen: "127.0.0.1:9100" }, { maxConcurrentRuns: 2, defaultTimeout: "90s", dataDir: "/d" });
    expect(c.listen).toEqual({ host: "127.0.0.1", port: 9100 });
    expect(c.maxConcurrentRuns).toBe(8);
    expect(c.defaultTimeout).toBe(90_000);
    expect(c.dataDir).toBe("/d");
  });

  it("names the flag or variable at fault", () => {
    expect(() => loadConfig({ PADDOCK_DEFAULT_TIMEOUT: "soon" }, {})).toThrow(/PADDOCK_DEFAULT_TIMEOUT: "soon" is not a duration/);
    expect(() => loadConfig({}, { listen: "nowhere" })).toThrow(/--listen: "nowhere" is not host:port/);
    expect(() => loadConfig({}, { defaultTimeout: "48h" })).toThrow(/--default-timeout: must be more than 0 and at most 24h/);
    expect(() => loadConfig({}, {}, { colour: "blue", maxConcurrentRuns: 3, size: 1 } as never)).toThrow(/invalid configuration:\n  colour \(config file\): is not a setting \(see paddock serve --help\)\n  size \(config file\): is not a setting/);
    expect(() => loadConfig({}, { idleTimeout: "0s" })).toThrow(/--idle-timeout: must be more than 0/);
    expect(() => loadConfig({ PADDOCK_MAX_CONNECTIONS: "50" }, { maxConnectionsPerAddress: 100 })).toThrow(/--max-connections-per-address: must be at most --max-connections \(50\)/);
  });

  it("says in words what is wrong with a number, a choice or a URL", () => {
    expect(() => loadConfig({}, { maxConcurrentRuns: "0" })).toThrow(/--max-concurrent-runs: Too small: expected number to be >=1/);
    expect(() => loadConfig({ PADDOCK_MAX_CONCURRENT_RUNS: "1.5" }, {})).toThrow(/PADDOCK_MAX_CONCURRENT_RUNS: Invalid input: expected int/);
    expect(() => loadConfig({}, { dockerCpus: "many" })).toThrow(/--docker-cpus: Invalid input: expected number, received NaN/);
    expect(() => loadConfig({}, { defaultProvider: "k8s" })).toThrow(/--default-provider: Invalid option: expected one of "local"\|"docker"\|"modal"/);
    expect(() => loadConfig({}, { gitHost: "nope" })).toThrow(/--git-host: Invalid URL/);
    expect(() => loadConfig({}, { dockerRuntime: "Run C" })).toThrow(/--docker-runtime: is not a runtime name/);
  });

  it("reads the sandbox allow list as CIDRs and names a bad entry", () => {
    expect(loadConfig({ PADDOCK_SANDBOX_ALLOW_CIDRS: "172.17.0.1, 10.20.0.0/16" }, {}).sandboxAllowCidrs).toEqual(["172.17.0.1/32", "10.20.0.0/16"]);
    expect(loadConfig({}, {}).sandboxAllowCidrs).toEqual([]);
    expect(() => loadConfig({}, { sandboxAllowCidrs: "10.0.0.0/8,10.0.0.300" })).toThrow(/--sandbox-allow-cidrs: "10.0.0.300" is not an IPv4 address or CIDR/);
    expect(() => loadConfig({ PADDOCK_SANDBOX_ALLOW_CIDRS: "10.0.0.0/33" }, {})).toThrow(/PADDOCK_SANDBOX_ALLOW_CIDRS: "10.0.0.0\/33"/);
  });

  it("takes a GitHub App only whole, and a GitHub Enterprise API URL", () => {
    expect(loadConfig({}, {})).toMatchObject({ githubAppId: "", githubApiUrl: "https://api.github.com" });
    const c = loadConfig({ PADDOCK_GITHUB_APP_ID: "123", PADDOCK_GITHUB_APP_KEY_FILE: "/k.pem", PADDOCK_GITHUB_INSTALLATION_ID: "9" }, { githubApiUrl: "https://ghe.example.test/api/v3" });
    expect(c).toMatchObject({ githubAppId: "123", githubAppKeyFile: "/k.pem", githubInstallationId: "9", githubApiUrl: "https://ghe.example.test/api/v3" });
    expect(() => loadConfig({}, { githubAppId: "123" })).toThrow(/--github-app-key-file: is missing: a GitHub App needs/);
    expect(() => loadConfig({}, { githubAppId: "123", githubAppKeyFile: "/k.pem" })).toThrow(/needs --github-app-id, --github-app-key-file and --github-installation-id together/);
    expect(() => loadConfig({}, { githubInstallationId: "x" })).toThrow(/--github-installation-id: is not an installation id/);
    expect(() => loadConfig({}, { githubApiUrl: "ftp://x" })).toThrow(/--github-api-url/);
  });

  it("parses durations", () => {
    expect(parseDuration("1h30m")).toBe(5_400_000);
    expect(parseDuration("250ms")).toBe(250);
    expect(parseDuration("5000")).toBe(5000);
    expect(parseDuration("5 minutes")).toBeNull();
  });
});
