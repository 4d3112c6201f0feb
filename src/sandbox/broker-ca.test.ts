import { generateKeyPairSync, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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

describe("the broker CA (node-forge loads at the first leaf, a bad pair still fails the start)", () => {
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
