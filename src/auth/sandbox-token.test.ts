import { generateKeyPair, SignJWT, UnsecuredJWT } from "jose";
import { rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "../../test/fixtures.js";
import { createSandboxTokenVerifier, issueSandboxToken, loadOrCreateSandboxKeys } from "./sandbox-token.js";

const dir = tempDir("keys");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("sandbox tokens", () => {
  it("makes a 0600 key pair on first start and reuses it after", async () => {
    const first = await loadOrCreateSandboxKeys(dir);
    expect(statSync(join(dir, "sandbox-token.key")).mode & 0o777).toBe(0o600);
    const second = await loadOrCreateSandboxKeys(dir);
    expect(second.publicKeyPem).toBe(first.publicKeyPem);
  });

  it("accepts only RS256 tokens of this daemon, for this run, unexpired", async () => {
    const keys = await loadOrCreateSandboxKeys(dir);
    const verify = await createSandboxTokenVerifier(keys.publicKeyPem, "run_a");
    expect(await verify(await issueSandboxToken(keys, "run_a"))).toBe(true);
    expect(await verify(await issueSandboxToken(keys, "run_b"))).toBe(false);
    expect(await verify(await issueSandboxToken(keys, "run_a", -10))).toBe(false);
    expect(await verify(new UnsecuredJWT({ sub: "run_a" }).setIssuer("paddock").setAudience("paddock:sandbox").setExpirationTime("1h").encode())).toBe(false);
    const other = await generateKeyPair("RS256");
    const foreign = await new SignJWT({}).setProtectedHeader({ alg: "RS256" }).setIssuer("paddock").setAudience("paddock:sandbox").setSubject("run_a").setExpirationTime("1h").sign(other.privateKey);
    expect(await verify(foreign)).toBe(false);
    // HS256 "signed" with the public key as the HMAC secret: the classic algorithm confusion.
    const confused = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setIssuer("paddock").setAudience("paddock:sandbox").setSubject("run_a").setExpirationTime("1h").sign(new TextEncoder().encode(keys.publicKeyPem));
    expect(await verify(confused)).toBe(false);
    const claims = (aud: string, iss: string) =>
      new SignJWT({}).setProtectedHeader({ alg: "RS256" }).setIssuer(iss).setAudience(aud).setSubject("run_a").setExpirationTime("1h").sign(keys.privateKey);
    expect(await verify(await claims("paddock:api", "paddock"))).toBe(false);
    expect(await verify(await claims("paddock:sandbox", "someone-else"))).toBe(false);
    expect(await verify(await claims("paddock:sandbox", "paddock"))).toBe(true);
    const good = await issueSandboxToken(keys, "run_a");
    const [h, , s] = good.split(".");
    const tampered = `${h}.${Buffer.from(JSON.stringify({ sub: "run_a", iss: "paddock", aud: "paddock:sandbox", exp: 9e9 })).toString("base64url")}.${s}`;
    expect(await verify(tampered)).toBe(false);
  });
});
