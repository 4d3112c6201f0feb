import { exportPKCS8, exportSPKI, generateKeyPair, SignJWT, UnsecuredJWT } from "jose";
import { rmSync, statSync, writeFileSync } from "node:fs";
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

  it("makes an Ed25519 key pair; a data dir with an RSA pair (made before) keeps signing RS256 tokens its sandboxes verify", async () => {
    expect((await loadOrCreateSandboxKeys(dir)).alg).toBe("EdDSA");
    const old = tempDir("rsa-keys");
    try {
      const pair = await generateKeyPair("RS256", { extractable: true });
      writeFileSync(join(old, "sandbox-token.key"), await exportPKCS8(pair.privateKey), { mode: 0o600 });
      writeFileSync(join(old, "sandbox-token.pub"), await exportSPKI(pair.publicKey));
      const keys = await loadOrCreateSandboxKeys(old);
      expect(keys.alg).toBe("RS256");
      const token = await issueSandboxToken(keys, "run_a");
      expect(JSON.parse(Buffer.from(token.split(".")[0]!, "base64url").toString()).alg).toBe("RS256");
      expect(await (await createSandboxTokenVerifier(keys.publicKeyPem, "run_a"))(token)).toBe(true);
      // A token of the new daemon's key is not one of this key's.
      expect(await (await createSandboxTokenVerifier(keys.publicKeyPem, "run_a"))(await issueSandboxToken(await loadOrCreateSandboxKeys(dir), "run_a"))).toBe(false);
    } finally {
      rmSync(old, { recursive: true, force: true });
    }
  });

  it("accepts only tokens of this daemon, for this run, unexpired", async () => {
    const keys = await loadOrCreateSandboxKeys(dir);
    const verify = await createSandboxTokenVerifier(keys.publicKeyPem, "run_a");
    expect(await verify(await issueSandboxToken(keys, "run_a"))).toBe(true);
    expect(await verify(await issueSandboxToken(keys, "run_b"))).toBe(false);
    expect(await verify(await issueSandboxToken(keys, "run_a", -10))).toBe(false);
    expect(await verify(new UnsecuredJWT({ sub: "run_a" }).setIssuer("paddock").setAudience("paddock:sandbox").setExpirationTime("1h").encode())).toBe(false);
    const other = await generateKeyPair("EdDSA", { crv: "Ed25519" });
    const foreign = await new SignJWT({}).setProtectedHeader({ alg: "EdDSA" }).setIssuer("paddock").setAudience("paddock:sandbox").setSubject("run_a").setExpirationTime("1h").sign(other.privateKey);
    expect(await verify(foreign)).toBe(false);
    // HS256 "signed" with the public key as the HMAC secret: the classic algorithm confusion.
    const confused = await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setIssuer("paddock").setAudience("paddock:sandbox").setSubject("run_a").setExpirationTime("1h").sign(new TextEncoder().encode(keys.publicKeyPem));
    expect(await verify(confused)).toBe(false);
    const claims = (aud: string, iss: string) =>
      new SignJWT({}).setProtectedHeader({ alg: keys.alg }).setIssuer(iss).setAudience(aud).setSubject("run_a").setExpirationTime("1h").sign(keys.privateKey);
    expect(await verify(await claims("paddock:api", "paddock"))).toBe(false);
    expect(await verify(await claims("paddock:sandbox", "someone-else"))).toBe(false);
    expect(await verify(await claims("paddock:sandbox", "paddock"))).toBe(true);
    const good = await issueSandboxToken(keys, "run_a");
    const [h, , s] = good.split(".");
    const tampered = `${h}.${Buffer.from(JSON.stringify({ sub: "run_a", iss: "paddock", aud: "paddock:sandbox", exp: 9e9 })).toString("base64url")}.${s}`;
    expect(await verify(tampered)).toBe(false);
  });
});
