import { generateKeyPairSync, X509Certificate } from "node:crypto";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer, type SecureContext } from "node:tls";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { BrokerCa, CA_CERT_FILE, CA_KEY_FILE } from "./broker-ca.js";

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));
const dataDir = () => {
  const d = mkdtempSync(join(tmpdir(), "paddock-broker-ca-"));
  dirs.push(d);
  return d;
};

/** A TLS handshake as a sandbox's client makes it: trusting `caPem` only, asking for `host`. */
async function handshake(context: SecureContext, caPem: string, host: string): Promise<{ authorized: boolean; error?: string; subject?: string }> {
  const server = createServer({ SNICallback: (_name, cb) => cb(null, context) }, (s) => s.end());
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    return await new Promise((resolve) => {
      const socket = connect({ host: "127.0.0.1", port: (server.address() as AddressInfo).port, servername: host, ca: [caPem], rejectUnauthorized: false }, () => {
        resolve({ authorized: socket.authorized, error: socket.authorizationError?.toString(), subject: [socket.getPeerCertificate().subject?.CN].flat().join(",") || undefined });
        socket.destroy();
      });
      socket.on("error", (e) => resolve({ authorized: false, error: e.message }));
    });
  } finally {
    server.close();
  }
}

describe("the broker CA (made and signed by Node's crypto; a bad pair still fails the start)", () => {
  it("is made once, loaded again, and signs leaves its certificate verifies", async () => {
    const dir = dataDir();
    const made = await BrokerCa.loadOrCreate(dir, "inst1");
    const loaded = await BrokerCa.loadOrCreate(dir, "inst1");
    expect(loaded.certPem).toBe(made.certPem);
    const leaf = await loaded.issue("api.example.com");
    const ca = new X509Certificate(loaded.certPem);
    const cert = new X509Certificate(leaf.certPem);
    expect(cert.checkIssued(ca) && cert.verify(ca.publicKey)).toBe(true);
    expect(cert.subjectAltName).toBe("DNS:api.example.com");
    expect(cert.ca).toBe(false);
    expect(cert.keyUsage).toEqual(["1.3.6.1.5.5.7.3.1"]); // serverAuth only
    expect(cert.checkHost("api.example.com")).toBe("api.example.com");
    expect(cert.checkHost("other.example.com")).toBeUndefined();
    expect(new Date(cert.validTo).getTime()).toBe(leaf.notAfter);
    expect(ca.ca).toBe(true);
    expect(ca.subject).toBe("CN=paddock egress broker CA inst1\nO=paddock");
    expect(ca.checkIssued(ca) && ca.verify(ca.publicKey)).toBe(true);
    expect(new Date(ca.validTo).getUTCFullYear()).toBe(new Date().getUTCFullYear() + 10);
  });

  it("presents leaves a client trusting only the CA accepts for their host, and refuses for another", async () => {
    const ca = await BrokerCa.loadOrCreate(dataDir(), "inst1");
    const ok = await handshake(await ca.contextFor("api.example.com"), ca.certPem, "api.example.com");
    expect(ok).toEqual({ authorized: true, error: undefined, subject: "api.example.com" });
    const wrongHost = await handshake(await ca.contextFor("api.example.com"), ca.certPem, "evil.example.com");
    expect(wrongHost.subject).toBe("api.example.com"); // the chain is good; the name check is the client's (checkServerIdentity)
    const other = await BrokerCa.loadOrCreate(dataDir(), "inst2");
    const untrusted = await handshake(await ca.contextFor("api.example.com"), other.certPem, "api.example.com");
    expect(untrusted.authorized).toBe(false);
  });

  it("goes on signing with a CA an earlier version made with node-forge (data dirs from before)", async () => {
    const dir = dataDir();
    const fixtures = join(import.meta.dirname, "..", "..", "test", "fixtures");
    copyFileSync(join(fixtures, "forge-broker-ca.key"), join(dir, CA_KEY_FILE));
    copyFileSync(join(fixtures, "forge-broker-ca.pem"), join(dir, CA_CERT_FILE));
    const ca = await BrokerCa.loadOrCreate(dir, "ignored: the files are loaded");
    expect(ca.certPem).toBe(readFileSync(join(fixtures, "forge-broker-ca.pem"), "utf8"));
    const leaf = new X509Certificate((await ca.issue("api.example.com")).certPem);
    const caCert = new X509Certificate(ca.certPem);
    expect(leaf.issuer).toBe(caCert.subject);
    expect(leaf.checkIssued(caCert) && leaf.verify(caCert.publicKey)).toBe(true);
    expect(await handshake(await ca.contextFor("api.example.com"), ca.certPem, "api.example.com")).toMatchObject({ authorized: true });
  });

  it("refuses a certificate it cannot read, a key of another pair, and a non-RSA key", async () => {
    const dir = dataDir();
    await BrokerCa.loadOrCreate(dir, "inst1");
    const other = dataDir();
    await BrokerCa.loadOrCreate(other, "inst2");

    writeFileSync(join(other, CA_CERT_FILE), "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n");
    await expect(BrokerCa.loadOrCreate(other, "inst2")).rejects.toThrow(/broker CA certificate .* cannot be read/);

    const mixed = dataDir();
    writeFileSync(join(mixed, CA_KEY_FILE), readFileSync(join(dir, CA_KEY_FILE)), { mode: 0o600 });
    writeFileSync(join(mixed, CA_CERT_FILE), (await BrokerCa.loadOrCreate(dataDir(), "inst3")).certPem);
    await expect(BrokerCa.loadOrCreate(mixed, "inst1")).rejects.toThrow(/does not belong to the certificate/);

    const ec = dataDir();
    writeFileSync(join(ec, CA_KEY_FILE), generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    writeFileSync(join(ec, CA_CERT_FILE), (await BrokerCa.loadOrCreate(dataDir(), "inst4")).certPem);
    await expect(BrokerCa.loadOrCreate(ec, "inst1")).rejects.toThrow(/must be RSA/);
  });
});
