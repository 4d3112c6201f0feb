import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { exportPKCS8, exportSPKI, generateKeyPair, importPKCS8, importSPKI, jwtVerify, SignJWT, type CryptoKey } from "jose";

/**
 * Sandbox connection tokens: the daemon signs, the runner inside a sandbox verifies with
 * the public key it was given. Algorithm, issuer and audience are fixed, never read from
 * the token.
 */
export const SANDBOX_TOKEN_ALG = "RS256";
export const SANDBOX_TOKEN_ISSUER = "paddock";
export const SANDBOX_TOKEN_AUDIENCE = "paddock:sandbox";

export interface SandboxKeys {
  privateKey: CryptoKey;
  publicKeyPem: string;
}

/** Loads the daemon's key pair from the data dir, generating it (0600) on first start. */
export async function loadOrCreateSandboxKeys(dataDir: string): Promise<SandboxKeys> {
  const privPath = join(dataDir, "sandbox-token.key");
  const pubPath = join(dataDir, "sandbox-token.pub");
  try {
    const [priv, pub] = await Promise.all([readFile(privPath, "utf8"), readFile(pubPath, "utf8")]);
    return { privateKey: await importPKCS8(priv, SANDBOX_TOKEN_ALG), publicKeyPem: pub };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  const { privateKey, publicKey } = await generateKeyPair(SANDBOX_TOKEN_ALG, { extractable: true, modulusLength: 2048 });
  const publicKeyPem = await exportSPKI(publicKey);
  await mkdir(dataDir, { recursive: true });
  await writeFile(privPath, await exportPKCS8(privateKey), { mode: 0o600, flag: "wx" });
  await chmod(privPath, 0o600);
  await writeFile(pubPath, publicKeyPem, { mode: 0o644 });
  return { privateKey, publicKeyPem };
}

export async function issueSandboxToken(keys: SandboxKeys, runId: string, ttlSeconds = 24 * 3600): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: SANDBOX_TOKEN_ALG, typ: "JWT" })
    .setIssuer(SANDBOX_TOKEN_ISSUER)
    .setAudience(SANDBOX_TOKEN_AUDIENCE)
    .setSubject(runId)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
    .sign(keys.privateKey);
}

/** A verifier bound to one run: rejects any token that is not for exactly that run. */
export async function createSandboxTokenVerifier(publicKeyPem: string, runId: string) {
  const key = await importSPKI(publicKeyPem, SANDBOX_TOKEN_ALG);
  return async (token: string): Promise<boolean> => {
    try {
      const { payload } = await jwtVerify(token, key, {
        algorithms: [SANDBOX_TOKEN_ALG],
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
