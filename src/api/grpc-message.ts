type Headers = Record<string, unknown>;

/**
 * Percent-encodes a grpc-message as the gRPC spec says: only bytes outside printable
 * ASCII, and "%" itself. connect-es uses encodeURIComponent, which also encodes ":" and
 * "/"; @grpc/grpc-js decodes with decodeURI, which leaves those, so its users read
 * "run_id%3A is required".
 */
export function encodeGrpcMessage(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

function reencode(headers: Headers | undefined): void {
  if (!headers || typeof headers !== "object" || Array.isArray(headers)) return;
  for (const key of Object.keys(headers)) {
    const value = headers[key];
    if (key.toLowerCase() !== "grpc-message" || typeof value !== "string") continue;
    try {
      headers[key] = encodeGrpcMessage(decodeURIComponent(value));
    } catch {
      // Not ours to fix: a value that is not percent-encoded UTF-8 is passed on as it is.
    }
  }
}

/**
 * Wraps a request handler so that grpc-message, in headers (trailers-only responses) and
 * trailers, is encoded per the spec; clients that decode with decodeURIComponent (Connect's)
 * read it the same. gRPC-Web's trailers in the body are left alone.
 */
export function specGrpcMessage<Req, Res extends object>(handler: (req: Req, res: Res) => void): (req: Req, res: Res) => void {
  return (req, res) => {
    const r = res as unknown as {
      writeHead: (status: number, ...rest: unknown[]) => unknown;
      addTrailers: (headers: Headers) => void;
    };
    const writeHead = r.writeHead.bind(res);
    r.writeHead = (status, ...rest) => {
      for (const arg of rest) if (arg && typeof arg === "object") reencode(arg as Headers);
      return writeHead(status, ...rest);
    };
    const addTrailers = r.addTrailers.bind(res);
    r.addTrailers = (headers) => {
      reencode(headers);
      addTrailers(headers);
    };
    handler(req, res);
  };
}
