import { createHash, sign, type KeyObject } from "node:crypto";

/**
 * The few X.509 certificates the egress broker makes (its CA, and leaves it signs), built
 * in DER by hand and signed by Node's crypto. Node parses and verifies certificates but
 * cannot make one; the library that can (node-forge) cost an idle daemon ~8 MiB and signed
 * in JavaScript. Only what RFC 5280 needs for these two shapes is here.
 */

/** A DER element: tag, definite length, contents. */
function tlv(tag: number, ...contents: Buffer[]): Buffer {
  const body = Buffer.concat(contents);
  const n = body.length;
  const length = n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : n < 0x10000 ? Buffer.from([0x82, n >> 8, n & 0xff]) : Buffer.from([0x83, n >> 16, (n >> 8) & 0xff, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), length, body]);
}

const sequence = (...items: Buffer[]) => tlv(0x30, ...items);
const set = (...items: Buffer[]) => tlv(0x31, ...items);
const octets = (b: Buffer) => tlv(0x04, b);
const bool = (v: boolean) => tlv(0x01, Buffer.from([v ? 0xff : 0x00]));
const utf8 = (s: string) => tlv(0x0c, Buffer.from(s, "utf8"));

/** A non-negative INTEGER from big-endian bytes (a leading zero added where the top bit is set). */
function integer(bytes: Buffer): Buffer {
  let b = bytes;
  while (b.length > 1 && b[0] === 0 && b[1]! < 0x80) b = b.subarray(1);
  return tlv(0x02, b[0]! >= 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
}

function oid(dotted: string): Buffer {
  const arcs = dotted.split(".").map(Number);
  const out = [40 * arcs[0]! + arcs[1]!];
  for (const arc of arcs.slice(2)) {
    const digits = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) digits.unshift((v & 0x7f) | 0x80);
    out.push(...digits);
  }
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime through 2049, GeneralizedTime after (RFC 5280 4.1.2.5), to the second. */
function time(at: Date): Buffer {
  const iso = at.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 19).replace(/[-T:]/g, "") + "Z";
  return at.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(digits.slice(2))) : tlv(0x18, Buffer.from(digits));
}

/** BIT STRING of named bits (0 = the first, most significant), trailing zero bits dropped as DER wants. */
function namedBits(bits: number[]): Buffer {
  const last = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(last / 8) + 1);
  for (const bit of bits) bytes[bit >> 3]! |= 0x80 >> (bit & 7);
  return tlv(0x03, Buffer.from([7 - (last & 7)]), bytes);
}

const OID = {
  commonName: "2.5.4.3",
  organizationName: "2.5.4.10",
  sha256WithRSAEncryption: "1.2.840.113549.1.1.11",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extKeyUsage: "2.5.29.37",
  subjectAltName: "2.5.29.17",
  subjectKeyIdentifier: "2.5.29.14",
  authorityKeyIdentifier: "2.5.29.35",
  serverAuth: "1.3.6.1.5.5.7.3.1",
};

/** A distinguished name of (attribute, value) pairs, each its own RDN, values as UTF8String. */
export function distinguishedName(attributes: [keyof typeof OID & ("commonName" | "organizationName"), string][]): Buffer {
  return sequence(...attributes.map(([name, value]) => set(sequence(oid(OID[name]), utf8(value)))));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return sequence(oid(id), ...(critical ? [bool(true)] : []), octets(value));
}

/** RFC 5280 4.2.1.2, method 1: SHA-1 of the subjectPublicKey bits (the RSAPublicKey). */
export function keyIdentifier(key: KeyObject): Buffer {
  return createHash("sha1").update(key.export({ type: "pkcs1", format: "der" })).digest();
}

export interface CertificateSpec {
  /** Positive, at most 20 bytes. */
  serial: Buffer;
  subject: Buffer;
  issuer: Buffer;
  notBefore: Date;
  notAfter: Date;
  /** The certified RSA public key. */
  publicKey: KeyObject;
  /** The issuer's RSA private key (the subject's own for a self-signed CA). */
  signingKey: KeyObject;
  /** A CA that signs leaves only (pathLen 0), or a TLS server leaf for `host` with the issuer's key identifier. */
  shape: { ca: true } | { ca: false; host: string; authorityKeyId: Buffer };
}

/** The certificate as PEM. */
export function makeCertificate(c: CertificateSpec): string {
  const sha256WithRsa = sequence(oid(OID.sha256WithRSAEncryption), tlv(0x05));
  const shape = c.shape;
  const extensions = shape.ca
    ? [
        extension(OID.basicConstraints, true, sequence(bool(true), integer(Buffer.from([0])))),
        extension(OID.keyUsage, true, namedBits([5, 6])), // keyCertSign, cRLSign
        extension(OID.subjectKeyIdentifier, false, octets(keyIdentifier(c.publicKey))),
      ]
    : [
        extension(OID.basicConstraints, true, sequence()), // cA FALSE, the default, is left out in DER
        extension(OID.keyUsage, true, namedBits([0, 2])), // digitalSignature, keyEncipherment
        extension(OID.extKeyUsage, false, sequence(oid(OID.serverAuth))),
        extension(OID.subjectAltName, false, sequence(tlv(0x82, Buffer.from(shape.host, "ascii")))), // dNSName
        extension(OID.subjectKeyIdentifier, false, octets(keyIdentifier(c.publicKey))),
        extension(OID.authorityKeyIdentifier, false, sequence(tlv(0x80, shape.authorityKeyId))),
      ];
  const tbs = sequence(
    tlv(0xa0, integer(Buffer.from([2]))), // v3
    integer(c.serial),
    sha256WithRsa,
    c.issuer,
    sequence(time(c.notBefore), time(c.notAfter)),
    c.subject,
    c.publicKey.export({ type: "spki", format: "der" }),
    tlv(0xa3, sequence(...extensions)),
  );
  const signature = sign("sha256", tbs, c.signingKey);
  const der = sequence(tbs, sha256WithRsa, tlv(0x03, Buffer.from([0]), signature));
  const base64 = der.toString("base64").replace(/.{64}/g, "$&\n").replace(/\n?$/, "\n");
  return `-----BEGIN CERTIFICATE-----\n${base64}-----END CERTIFICATE-----\n`;
}

/** The subject Name of a certificate, as its DER bytes (a leaf's issuer must be exactly these). */
export function subjectOf(certPem: string): Buffer {
  const der = Buffer.from(certPem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
  // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version, serial, signature, issuer, validity, subject, … } … }
  const tbs = children(der)[0]!;
  const fields = children(tbs);
  const offset = fields[0]![0] === 0xa0 ? 1 : 0; // version is optional (v1)
  const subject = fields[offset + 4];
  if (!subject || subject[0] !== 0x30) throw new Error("the certificate has no subject where X.509 puts it");
  return subject;
}

/** The elements inside a constructed DER element (each with its tag and length). */
function children(element: Buffer): Buffer[] {
  const { header, length } = head(element);
  const body = element.subarray(header, header + length);
  const out: Buffer[] = [];
  for (let at = 0; at < body.length; ) {
    const h = head(body.subarray(at));
    out.push(body.subarray(at, at + h.header + h.length));
    at += h.header + h.length;
  }
  return out;
}

function head(b: Buffer): { header: number; length: number } {
  if (b.length < 2) throw new Error("truncated DER");
  const first = b[1]!;
  if (first < 0x80) return { header: 2, length: first };
  const n = first & 0x7f;
  if (n === 0 || n > 3 || b.length < 2 + n) throw new Error("unsupported DER length");
  let length = 0;
  for (let i = 0; i < n; i++) length = length * 256 + b[2 + i]!;
  if (2 + n + length > b.length) throw new Error("truncated DER");
  return { header: 2 + n, length };
}
