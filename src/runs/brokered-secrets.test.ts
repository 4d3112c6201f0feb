import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { loadOrCreateSecretBox } from "../auth/secret-box.js";
import { InvalidArgumentError } from "../errors.js";
import { brokerHeader, normalizedPath } from "../sandbox/secret-broker.js";
import { brokerRefusal, brokersOfStage, parseBroker, presetBroker, runSecrets, secretAad, type BrokerInput } from "./brokered-secrets.js";

const input = (b: Partial<BrokerInput>): BrokerInput => ({ host: "api.example.com", pathPrefix: "", header: "", template: "", basicUsername: "", ...b });
const fieldOf = (f: () => unknown) => {
  try {
    f();
  } catch (error) {
    return (error as InvalidArgumentError).field;
  }
  return null;
};

describe("brokered secrets", () => {
  test("a broker is parsed to one rule: port 443 unless given, header lowercased, template defaulted", () => {
    expect(parseBroker("b", input({ header: "X-Api-Key" }))).toEqual({ host: "api.example.com", port: 443, pathPrefix: "", header: "x-api-key", template: "{value}", basicUsername: "" });
    expect(parseBroker("b", input({ host: "*.example.com:8443", header: "authorization", template: "Bearer {value}", pathPrefix: "/v1/" }))).toMatchObject({ host: "*.example.com", port: 8443, pathPrefix: "/v1/" });
    const basic = parseBroker("b", input({ host: "github.com", basicUsername: "x-access-token" }));
    expect(brokerHeader({ name: "T", value: "tok", rule: basic })).toEqual(["authorization", `Basic ${Buffer.from("x-access-token:tok").toString("base64")}`]);
  });

  test("a bad broker names its field", () => {
    expect(fieldOf(() => parseBroker("b", input({ host: "10.0.0.1", header: "x" })))).toBe("b.host");
    expect(fieldOf(() => parseBroker("b", input({ header: "host" })))).toBe("b.header");
    expect(fieldOf(() => parseBroker("b", input({ header: "bad header" })))).toBe("b.header");
    expect(fieldOf(() => parseBroker("b", input({ header: "x-api-key", template: "Bearer" })))).toBe("b.template");
    expect(fieldOf(() => parseBroker("b", input({ header: "x-api-key", template: "{value}\r\nx: y" })))).toBe("b.template");
    expect(fieldOf(() => parseBroker("b", input({ header: "x", pathPrefix: "/v1/../x" })))).toBe("b.path_prefix");
    expect(fieldOf(() => parseBroker("b", input({ basicUsername: "a", header: "x" })))).toBe("b.basic_username");
    expect(fieldOf(() => parseBroker("b", input({ basicUsername: "a:b" })))).toBe("b.basic_username");
  });

  test("paths are compared after dot segments are resolved", () => {
    expect(normalizedPath("/v1/../admin")).toBe("/admin");
    expect(normalizedPath("/v1/%2e%2e/admin")).toBe("/admin");
    expect(normalizedPath("//evil.example/x")).toBeNull();
    expect(normalizedPath("http://evil.example/x")).toBeNull();
  });

  test("the presets broker their model key for the API host, or an https base URL's host; else the key is plain, with a note", () => {
    const claude = ["claude-code-acp"];
    expect(presetBroker(claude, {}, "ANTHROPIC_API_KEY")).toMatchObject({ host: "api.anthropic.com", port: 443, header: "x-api-key" });
    expect(presetBroker(["codex-acp"], {}, "OPENAI_API_KEY")).toMatchObject({ host: "api.openai.com", header: "authorization", template: "Bearer {value}" });
    expect(presetBroker(claude, { ANTHROPIC_BASE_URL: "https://gw.example.test:8443/x" }, "ANTHROPIC_API_KEY")).toMatchObject({ host: "gw.example.test", port: 8443 });
    expect(presetBroker(claude, { ANTHROPIC_BASE_URL: "http://10.0.0.1:80" }, "ANTHROPIC_API_KEY")).toMatch(/not an https URL/);
    expect(presetBroker(claude, {}, "OPENAI_API_KEY")).toBeNull();
    expect(presetBroker(["sh", "-c", "x"], {}, "ANTHROPIC_API_KEY")).toBeNull();

    const secrets = [
      { name: "ANTHROPIC_API_KEY", value: "k", setupOnly: false, broker: null },
      { name: "OTHER", value: "o", setupOnly: false, broker: null },
    ];
    const brokered = runSecrets(secrets, { agentCommand: claude, envVars: {}, providerBrokers: true });
    expect(brokered.secrets.map((s) => !!s.broker)).toEqual([true, false]);
    expect(brokersOfStage(brokered.secrets, "agent").map((b) => b.name)).toEqual(["ANTHROPIC_API_KEY"]);
    const plain = runSecrets(secrets, { agentCommand: claude, envVars: {}, providerBrokers: false });
    expect(plain.secrets.every((s) => !s.broker)).toBe(true);
    expect(plain.notes.join()).toMatch(/ANTHROPIC_API_KEY is given to the agent as is/);
  });

  test("providers that cannot force traffic through the proxy are refused with a reason", () => {
    expect(brokerRefusal({ name: "local" }, ["K"])).toMatch(/local provider runs the agent on the host/);
    expect(brokerRefusal({ name: "modal" }, ["K"])).toMatch(/modal provider does not force/);
    expect(brokerRefusal({ name: "docker", brokersSecrets: true }, ["K"])).toBeNull();
    expect(brokerRefusal({ name: "local" }, [])).toBeNull();
  });

  test("the rule is part of the sealed value: pointed elsewhere in the database, the value does not open", async () => {
    const dir = mkdtempSync(join(tmpdir(), "paddock-aad-"));
    try {
      const box = await loadOrCreateSecretBox(dir);
      const rule = parseBroker("b", input({ header: "x-api-key" }));
      const sealed = box.seal("sk-1234", secretAad("env_1", "K", rule));
      expect(box.open(sealed, secretAad("env_1", "K", rule))).toBe("sk-1234");
      expect(() => box.open(sealed, secretAad("env_1", "K", { ...rule, host: "evil.example.com" }))).toThrow();
      expect(() => box.open(sealed, secretAad("env_1", "K", null))).toThrow();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
