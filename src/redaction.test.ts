import { describe, expect, it } from "vitest";
import { redactor } from "./redaction.js";

const TOKEN = "ghp_S3cr3tT0k3n+/value?>";
const redact = redactor([{ name: "TOKEN", value: TOKEN }]);

/** Whether any 3 bytes of `secret` can be read back from base64 text, at any character offset. */
function leaks(text: string, secret: string): boolean {
  const needles = [];
  for (let i = 0; i + 3 <= secret.length; i++) needles.push(secret.slice(i, i + 3));
  for (const piece of text.split(/\[secret:[A-Z_]+\]/)) {
    for (let offset = 0; offset < 4; offset++) {
      const decoded = Buffer.from(piece.slice(offset).replace(/-/g, "+").replace(/_/g, "/"), "base64").toString("latin1");
      if (needles.some((n) => decoded.includes(n))) return true;
    }
  }
  return false;
}

describe("redactor", () => {
  it("replaces the value and leaves other text alone", () => {
    expect(redact(`token=${TOKEN} and again ${TOKEN}`)).toBe("token=[secret:TOKEN] and again [secret:TOKEN]");
    expect(redact("nothing to see")).toBe("nothing to see");
  });

  it("replaces the base64, base64url and hex forms whole", () => {
    const bytes = Buffer.from(TOKEN);
    for (const form of [bytes.toString("base64"), bytes.toString("base64url"), bytes.toString("hex"), bytes.toString("hex").toUpperCase()]) {
      expect(redact(`x ${form} y`)).toBe("x [secret:TOKEN] y");
    }
    expect(Buffer.from(TOKEN).toString("base64")).toMatch(/[+/=]/); // the two alphabets really differ here
  });

  it("leaves nothing readable of a secret base64-encoded inside a larger blob, at every alignment", () => {
    for (const encoding of ["base64", "base64url"] as const) {
      for (let k = 0; k < 3; k++) {
        for (let after = 0; after < 3; after++) {
          const blob = Buffer.concat([Buffer.from("prefix!".slice(0, 4 + k)), Buffer.from(TOKEN), Buffer.from("suffix".slice(0, 2 + after))]);
          const line = `data: ${blob.toString(encoding)}`;
          expect(leaks(line, TOKEN)).toBe(true);
          const out = redact(line);
          expect(out, `${encoding}, ${k} bytes before`).toContain("[secret:TOKEN]");
          expect(leaks(out.slice("data: ".length), TOKEN), `${encoding}, ${k} bytes before: ${out}`).toBe(false);
        }
      }
    }
  });

  it("replaces each line of a long secret's base64 as `base64` and `openssl base64` wrap it", () => {
    const key = "k".repeat(40) + "-----0123456789abcdefghijklmnopqrstuvwxyz-----" + "z".repeat(80);
    const r = redactor([{ name: "KEY", value: key }]);
    const encoded = Buffer.from(key).toString("base64");
    for (const width of [76, 64]) {
      const lines = encoded.match(new RegExp(`.{1,${width}}`, "g")) ?? [];
      expect(lines.length).toBeGreaterThan(2);
      for (const line of lines) expect(r(line)).toBe("[secret:KEY]");
    }
  });

  it("replaces each line of a multi-line secret printed on its own, but not trivial lines", () => {
    const pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQ\r\nEFAASCBKcwggSjAgEAAoIBAQ\n}\n-----END KEY-----";
    const r = redactor([{ name: "PEM", value: pem }]);
    expect(r("MIIEvQIBADANBgkqhkiG9w0BAQ")).toBe("[secret:PEM]");
    expect(r("  EFAASCBKcwggSjAgEAAoIBAQ")).toBe("  [secret:PEM]");
    expect(r("}")).toBe("}");
  });

  it("names the longer secret when one contains another", () => {
    const r = redactor([
      { name: "SHORT", value: "abcd1234" },
      { name: "LONG", value: "xx-abcd1234-yy" },
    ]);
    expect(r("xx-abcd1234-yy abcd1234")).toBe("[secret:LONG] [secret:SHORT]");
  });

  it("is the identity without secrets", () => {
    expect(redactor([])("a line")).toBe("a line");
    expect(redactor([{ name: "EMPTY", value: "" }])("a line")).toBe("a line");
  });
});
