import { createPublicKey, KeyObject, sign } from "node:crypto";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { exportPKCS8, exportSPKI, generateKeyPair, importPKCS8, importSPKI, jwtVerify, SignJWT, type CryptoKey } from "jose";

/**
 * Sandbox connection tokens: the daemon signs, the runner inside a sandbox verifies with
 * the public key it was given. The algorithm comes from the key — EdDSA (Ed25519) for keys
 * made now, RS256 for the RSA keys of data dirs made before (their sandboxes still verify
 * with them) — and never from the token. Issuer and audience are fixed.
 */
export type SandboxTokenAlg = "EdDSA" | "RS256";
export const SANDBOX_TOKEN_ISSUER = "paddock";
export const SANDBOX_TOKEN_AUDIENCE = "paddock:sandbox";

export interface SandboxKeys {
  alg: SandboxTokenAlg;
  privateKey: CryptoKey;
  publicKeyPem: string;
}

/** The algorithm a public key signs with; anything but Ed25519 or RSA is refused. */
export function sandboxTokenAlg(publicKeyPem: string): SandboxTokenAlg {
  const type = createPublicKey(publicKeyPem).asymmetricKeyType;
  if (type === "ed25519") return "EdDSA";
  if (type === "rsa") return "RS256";
  throw new Error(`sandbox token key: unsupported key type ${type}`);
}

/**
 * Loads the daemon's key pair from the data dir, generating it (0600) on first start.
 * Ed25519: a token is signed in about a tenth of RS256's time, and one is signed per run.
 */
export async function loadOrCreateSandboxKeys(dataDir: string): Promise<SandboxKeys> {
  const privPath = join(dataDir, "sandbox-token.key");
  const pubPath = join(dataDir, "sandbox-token.pub");
  try {
    const [priv, pub] = await Promise.all([readFile(privPath, "utf8"), readFile(pubPath, "utf8")]);
    const alg = sandboxTokenAlg(pub);
    return { alg, privateKey: await importPKCS8(priv, alg), publicKeyPem: pub };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  const alg = "EdDSA";
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true, crv: "Ed25519" });
  const publicKeyPem = await exportSPKI(publicKey);
  await mkdir(dataDir, { recursive: true });
  await writeFile(privPath, await exportPKCS8(privateKey), { mode: 0o600, flag: "wx" });
  await chmod(privPath, 0o600);
  await writeFile(pubPath, publicKeyPem, { mode: 0o644 });
  return { alg, privateKey, publicKeyPem };
}

export async function issueSandboxToken(keys: SandboxKeys, runId: string, ttlSeconds = 24 * 3600): Promise<string> {
  const iat = Math.floor(Date.now() / 1000);
  const exp = Math.floor(Date.now() / 1000) + ttlSeconds;
  if (keys.alg === "EdDSA") {
    // Ed25519 signs in microseconds: node:crypto at once costs less than jose's WebCrypto
    // round trip (one token per run, on the provisioning path). The same JWS jose makes.
    const header = Buffer.from(JSON.stringify({ alg: "EdDSA", typ: "JWT" })).toString("base64url");
    const payload = Buffer.from(JSON.stringify({ iss: SANDBOX_TOKEN_ISSUER, aud: SANDBOX_TOKEN_AUDIENCE, sub: runId, iat, exp })).toString("base64url");
    const input = `${header}.${payload}`;
    return `${input}.${sign(null, Buffer.from(input), edKeyObject(keys.privateKey)).toString("base64url")}`;
  }
  // RS256 (older data dirs): a millisecond and more of CPU, kept off the event loop by WebCrypto.
  return new SignJWT({})
    .setProtectedHeader({ alg: keys.alg, typ: "JWT" })
    .setIssuer(SANDBOX_TOKEN_ISSUER)
    .setAudience(SANDBOX_TOKEN_AUDIENCE)
    .setSubject(runId)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(keys.privateKey);
}

/** The node:crypto KeyObject of an Ed25519 CryptoKey, made once per key. */
const keyObjects = new WeakMap<CryptoKey, KeyObject>();
function edKeyObject(key: CryptoKey): KeyObject {
  let object = keyObjects.get(key);
  if (!object) keyObjects.set(key, (object = KeyObject.from(key as Parameters<typeof KeyObject.from>[0])));
  return object;
}

/** A verifier bound to one run: rejects any token that is not for exactly that run. */
export async function createSandboxTokenVerifier(publicKeyPem: string, runId: string) {
  const alg = sandboxTokenAlg(publicKeyPem);
  const key = await importSPKI(publicKeyPem, alg);
  return async (token: string): Promise<boolean> => {
    try {
      const { payload } = await jwtVerify(token, key, {
        algorithms: [alg],
        issuer: SANDBOX_TOKEN_ISSUER,
        audience: SANDBOX_TOKEN_AUDIENCE,
        subject: runId,
        requiredClaims: ["exp", "sub"],
      });
      return payload.sub === runId;
    } catch {
      return false;
    }
  };
}
