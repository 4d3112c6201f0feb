import { createPrivateKey, generateKeyPair, randomBytes, X509Certificate } from "node:crypto";
import { chmod, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createSecureContext, type SecureContext } from "node:tls";
import { promisify } from "node:util";
import type forge from "node-forge";

const generateRsa = promisify(generateKeyPair);

/**
 * node-forge costs an idle daemon ~10 MiB: it is loaded when a CA is made (a new data dir)
 * or the first leaf is issued (a brokered secret is used), not at every start.
 */
let forgeModule: Promise<typeof forge> | null = null;
const loadForge = () => (forgeModule ??= import("node-forge").then((m) => m.default));

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

/** A positive serial of 16 random bytes, as forge wants it (hex). */
function serial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return b.toString("hex");
}

/**
 * The per-instance CA of the egress proxy: it signs, on demand, the certificate of a
 * brokered destination the proxy terminates TLS for, and nothing else. The key stays in
 * the data dir (0600) and in this process; sandboxes get the certificate only.
 *
 * Keys are made by Node's crypto (fast, native); node-forge only builds and signs the
 * X.509 structures, which Node cannot.
 */
export class BrokerCa {
  private readonly leaves = new Map<string, { context: SecureContext; renewAt: number }>();
  private leafKey: Promise<{ pem: string; key: forge.pki.rsa.PrivateKey; publicKey: forge.pki.rsa.PublicKey }> | null = null;
  /** The CA as forge objects, parsed at the first leaf. */
  private ca: Promise<{ lib: typeof forge; key: forge.pki.rsa.PrivateKey; cert: forge.pki.Certificate }> | null = null;

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
      certPem = makeCaCert(await loadForge(), keyPem, instance, now());
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
    this.ca ??= loadForge().then((lib) => ({
      lib,
      key: lib.pki.privateKeyFromPem(this.caKeyPem) as forge.pki.rsa.PrivateKey,
      cert: lib.pki.certificateFromPem(this.certPem),
    }));
    const { lib, key: caKey, cert: caCert } = await this.ca;
    this.leafKey ??= rsaKeyPem().then((pem) => {
      const key = lib.pki.privateKeyFromPem(pem) as forge.pki.rsa.PrivateKey;
      return { pem, key, publicKey: lib.pki.setRsaPublicKey(key.n, key.e) };
    });
    const { pem, publicKey } = await this.leafKey;
    const now = this.now();
    const cert = lib.pki.createCertificate();
    cert.publicKey = publicKey;
    cert.serialNumber = serial();
    cert.validity.notBefore = new Date(now - BACKDATE_MS);
    cert.validity.notAfter = new Date(now + LEAF_LIFETIME_MS);
    cert.setSubject([{ name: "commonName", value: host }]);
    cert.setIssuer(caCert.subject.attributes);
    cert.setExtensions([
      { name: "basicConstraints", cA: false, critical: true },
      { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
      { name: "extKeyUsage", serverAuth: true },
      { name: "subjectAltName", altNames: [{ type: 2, value: host }] },
      { name: "subjectKeyIdentifier" },
      { name: "authorityKeyIdentifier", keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
    ]);
    cert.sign(caKey, lib.md.sha256.create());
    return { certPem: lib.pki.certificateToPem(cert), keyPem: pem, notAfter: cert.validity.notAfter.getTime() };
  }
}

/**
 * A bad CA pair fails the daemon's start, as parsing it with forge there did: an RSA key and
 * an RSA certificate (all forge handles) that belong together, checked by Node's crypto.
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

function makeCaCert(lib: typeof forge, keyPem: string, instance: string, now: number): string {
  const key = lib.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
  const cert = lib.pki.createCertificate();
  cert.publicKey = lib.pki.setRsaPublicKey(key.n, key.e);
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(now - BACKDATE_MS);
  cert.validity.notAfter = new Date(now);
  cert.validity.notAfter.setFullYear(cert.validity.notAfter.getFullYear() + CA_LIFETIME_YEARS);
  const name = [
    { name: "commonName", value: `paddock egress broker CA ${instance}` },
    { name: "organizationName", value: "paddock" },
  ];
  cert.setSubject(name);
  cert.setIssuer(name);
  cert.setExtensions([
    // pathLen 0: it signs leaves, never another CA.
    { name: "basicConstraints", cA: true, pathLenConstraint: 0, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
    { name: "subjectKeyIdentifier" },
  ]);
  cert.sign(key, lib.md.sha256.create());
  return lib.pki.certificateToPem(cert);
}
