import { appendFileSync, chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

/** The system bundles of common bases (Debian, Ubuntu, Alpine; RHEL, Fedora). */
const BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"];
/** A copy the agent's user can read whatever the mounted file's mode (Debian's place for local CAs). */
const COPY = "/usr/local/share/ca-certificates/paddock-operator.crt";

/**
 * Makes the sandbox trust the operator's CA certificates (a corporate TLS proxy): appended
 * to the system bundle, which git, curl and OpenSSL read, once however often it is called.
 * Returns the variables that point other tools (Node, Python requests) at them.
 */
export function trustCaFile(file: string): Record<string, string> {
  const pem = readFileSync(file, "utf8").trim();
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) throw new Error(`${file} holds no PEM certificate`);
  const present = BUNDLES.filter((b) => existsSync(b));
  const bundles = present.length > 0 ? present : [BUNDLES[0]!];
  for (const bundle of bundles) {
    const current = existsSync(bundle) ? readFileSync(bundle, "utf8") : "";
    if (current.includes(pem)) continue;
    mkdirSync(dirname(bundle), { recursive: true });
    appendFileSync(bundle, `${current && !current.endsWith("\n") ? "\n" : ""}${pem}\n`, { mode: 0o644 });
  }
  mkdirSync(dirname(COPY), { recursive: true });
  writeFileSync(COPY, `${pem}\n`);
  chmodSync(COPY, 0o644);
  const bundle = bundles[0]!;
  return { SSL_CERT_FILE: bundle, GIT_SSL_CAINFO: bundle, CURL_CA_BUNDLE: bundle, REQUESTS_CA_BUNDLE: bundle, NODE_EXTRA_CA_CERTS: COPY };
}
