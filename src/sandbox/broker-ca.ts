import { createPrivateKey, createPublicKey, generateKeyPair, randomBytes, X509Certificate, type KeyObject } from "node:crypto";
import { chmod, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createSecureContext, type SecureContext } from "node:tls";
import { promisify } from "node:util";
import { distinguishedName, keyIdentifier, makeCertificate, subjectOf } from "./x509.js";

const generateRsa = promisify(generateKeyPair);

/** Leaf certificates live this long: a copy taken out of the proxy is soon worthless. */
export const LEAF_LIFETIME_MS = 60 * 60_000;
/** A cached leaf is replaced this long before it expires. */
const LEAF_RENEW_MS = 10 * 60_000;
/** Clocks of sandboxes may run a little behind the host's. */
const BACKDATE_MS = 5 * 60_000;
const CA_LIFETIME_YEARS = 10;

export const CA_KEY_FILE = "broker-ca.key";
export const CA_CERT_FILE = "broker-ca.pem";

async function rsaKeyPem(): Promise<string> {
  const { privateKey } = await generateRsa("rsa", { modulusLength: 2048, privateKeyEncoding: { type: "pkcs1", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } });
  return privateKey;
}

/** A positive serial of 16 random bytes. */
function serial(): Buffer {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b;
}

/**
 * The per-instance CA of the egress proxy: it signs, on demand, the certificate of a
 * brokered destination the proxy terminates TLS for, and nothing else. The key stays in
 * the data dir (0600) and in this process; sandboxes get the certificate only.
 *
 * Keys are made and certificates signed by Node's crypto; the certificates' DER is built in
 * ./x509.ts, which Node cannot do.
 */
export class BrokerCa {
  private readonly leaves = new Map<string, { context: SecureContext; renewAt: number }>();
  /** One key for every leaf of this process (a leaf lives an hour; the key never leaves the proxy). */
  private leafKey: Promise<{ pem: string; publicKey: KeyObject }> | null = null;
  /** What a leaf takes of the CA, read at the first one. */
  private ca: { key: KeyObject; subject: Buffer; keyId: Buffer } | null = null;

  private constructor(
    private readonly caKeyPem: string,
    /** PEM of the CA certificate, for sandboxes' trust stores. */
    readonly certPem: string,
    /** Where certPem is, in the data dir. */
    readonly certFile: string,
    private readonly now: () => number,
  ) {}

  /** Loads the data dir's CA, or makes one (key 0600, written once, never copied elsewhere). */
  static async loadOrCreate(dataDir: string, instance: string, now: () => number = Date.now): Promise<BrokerCa> {
    const keyFile = join(dataDir, CA_KEY_FILE);
    const certFile = join(dataDir, CA_CERT_FILE);
    let keyPem: string;
    let certPem: string;
    try {
      keyPem = await readFile(keyFile, "utf8");
      certPem = await readFile(certFile, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
      keyPem = await rsaKeyPem();
      certPem = makeCaCert(keyPem, instance, now());
      // The key first and exclusively: a second daemon cannot share the data dir (lock), and
      // a half-made pair from a crash is found here as an error, not silently replaced.
      await writeFile(keyFile, keyPem, { mode: 0o600, flag: "wx" });
      await chmod(keyFile, 0o600);
      // Public, but the data dir keeps everything to itself (docker mounts it; the runner is root).
      await writeFile(certFile, certPem, { mode: 0o600 });
    }
    checkCaPair(keyPem, certPem, keyFile, certFile);
    return new BrokerCa(keyPem, certPem, certFile, now);
  }

  /** A TLS context presenting a fresh (cached) leaf for `host`, an exact DNS name. */
  async contextFor(host: string): Promise<SecureContext> {
    const cached = this.leaves.get(host);
    if (cached && cached.renewAt > this.now()) return cached.context;
    const leaf = await this.issue(host);
    const context = createSecureContext({ key: leaf.keyPem, cert: `${leaf.certPem}${this.certPem}` });
    this.leaves.set(host, { context, renewAt: leaf.notAfter - LEAF_RENEW_MS });
    return context;
  }

  /** A leaf certificate for `host`: serverAuth, the host as its only name, LEAF_LIFETIME_MS long. */
  async issue(host: string): Promise<{ certPem: string; keyPem: string; notAfter: number }> {
    this.ca ??= { key: createPrivateKey(this.caKeyPem), subject: subjectOf(this.certPem), keyId: keyIdentifier(new X509Certificate(this.certPem).publicKey) };
    this.leafKey ??= rsaKeyPem().then((pem) => ({ pem, publicKey: createPublicKey(pem) }));
    const { pem, publicKey } = await this.leafKey;
    const now = this.now();
    const notAfter = now + LEAF_LIFETIME_MS;
    const certPem = makeCertificate({
      serial: serial(),
      subject: distinguishedName([["commonName", host]]),
      issuer: this.ca.subject,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(notAfter),
      publicKey,
      signingKey: this.ca.key,
      shape: { ca: false, host, authorityKeyId: this.ca.keyId },
    });
    // To the second, as the certificate holds it.
    return { certPem, keyPem: pem, notAfter: Math.floor(notAfter / 1000) * 1000 };
  }
}

/**
 * A bad CA pair fails the daemon's start: an RSA key and an RSA certificate that belong
 * together, checked by Node's crypto.
 */
function checkCaPair(keyPem: string, certPem: string, keyFile: string, certFile: string): void {
  let key: ReturnType<typeof createPrivateKey>;
  let cert: X509Certificate;
  try {
    key = createPrivateKey(keyPem);
  } catch (error) {
    throw new Error(`the broker CA key ${keyFile} cannot be read: ${(error as Error).message}`);
  }
  try {
    cert = new X509Certificate(certPem);
  } catch (error) {
    throw new Error(`the broker CA certificate ${certFile} cannot be read: ${(error as Error).message}`);
  }
  if (key.asymmetricKeyType !== "rsa" || cert.publicKey.asymmetricKeyType !== "rsa") throw new Error(`the broker CA in ${keyFile} and ${certFile} must be RSA`);
  if (!cert.checkPrivateKey(key)) throw new Error(`the broker CA key ${keyFile} does not belong to the certificate ${certFile}`);
}

function makeCaCert(keyPem: string, instance: string, now: number): string {
  const key = createPrivateKey(keyPem);
  const notAfter = new Date(now);
  notAfter.setFullYear(notAfter.getFullYear() + CA_LIFETIME_YEARS);
  const name = distinguishedName([
    ["commonName", `paddock egress broker CA ${instance}`],
    ["organizationName", "paddock"],
  ]);
  return makeCertificate({
    serial: serial(),
    subject: name,
    issuer: name,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter,
    publicKey: createPublicKey(key),
    signingKey: key,
    shape: { ca: true },
  });
}
