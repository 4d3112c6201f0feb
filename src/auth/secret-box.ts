import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { chmod, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

/**
 * AES-256-GCM for secrets at rest. The key lives in its own 0600 file in the data dir,
 * made on first start: the database alone does not decrypt anything. The additional data
 * binds each ciphertext to its environment and name, so a value cannot be moved.
 */
export async function loadOrCreateSecretBox(dataDir: string) {
  const key = await loadOrCreateKey(join(dataDir, "secrets.key"));
  return {
    seal(plaintext: string, aad: string): string {
      const iv = randomBytes(12);
      const cipher = createCipheriv("aes-256-gcm", key, iv);
      cipher.setAAD(Buffer.from(aad));
      const ct = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
      return ["v1", iv.toString("base64url"), ct.toString("base64url"), cipher.getAuthTag().toString("base64url")].join(".");
    },
    open(sealed: string, aad: string): string {
      const [v, iv, ct, tag] = sealed.split(".");
      if (v !== "v1" || !iv || ct === undefined || !tag) throw new Error("sealed secret: unknown format");
      const decipher = createDecipheriv("aes-256-gcm", key, Buffer.from(iv, "base64url"));
      decipher.setAAD(Buffer.from(aad));
      decipher.setAuthTag(Buffer.from(tag, "base64url"));
      return Buffer.concat([decipher.update(Buffer.from(ct, "base64url")), decipher.final()]).toString("utf8");
    },
  };
}
/** A 32-byte key kept base64 in a 0600 file, made when missing. */
export async function loadOrCreateKey(path: string): Promise<Buffer> {
  try {
    const key = Buffer.from((await readFile(path, "utf8")).trim(), "base64");
    if (key.length !== 32) throw new Error(`${path} does not hold a 32-byte key`);
    return key;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    const key = randomBytes(32);
    await writeFile(path, key.toString("base64") + "\n", { mode: 0o600, flag: "wx" });
    await chmod(path, 0o600);
    return key;
  }
}

export type SecretBox = Awaited<ReturnType<typeof loadOrCreateSecretBox>>;
