import { existsSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_BINARY, DEFAULT_UNIT_PATH, renderUnit } from "../systemd/unit.js";
import { EXIT } from "./exit.js";

export const INSTALL_SYSTEMD_HELP = `usage: paddock install-systemd [--binary PATH] [--path FILE] [--dry-run]

Writes the daemon's systemd unit (Type=notify, watchdog, StateDirectory=paddock, hardened).

  --binary PATH   the paddock binary the unit starts (default: this binary when it is the
                  compiled one, else ${DEFAULT_BINARY})
  --path FILE     where to write it (default ${DEFAULT_UNIT_PATH})
  --dry-run       print the unit instead of writing it

Then: systemctl daemon-reload && systemctl enable --now paddock
Settings go to /etc/paddock/paddock.env (PADDOCK_LISTEN=…, one per line).`;

export interface LocalIo {
  out: (line: string) => void;
  err: (line: string) => void;
}

/** `paddock install-systemd`. `self`: this binary's path when it is the compiled one. */
export function installSystemd(argv: string[], io: LocalIo, self: string | null): number {
  const { values } = parseArgs({
    args: argv,
    options: { binary: { type: "string" }, path: { type: "string" }, "dry-run": { type: "boolean" }, help: { type: "boolean", short: "h" } },
    strict: true,
  });
  if (values.help) {
    io.out(INSTALL_SYSTEMD_HELP);
    return EXIT.ok;
  }
  const binary = values.binary ?? self ?? DEFAULT_BINARY;
  let unit: string;
  try {
    unit = renderUnit(binary);
  } catch (error) {
    io.err(`paddock: --binary: ${(error as Error).message}`);
    return EXIT.usage;
  }
  if (values["dry-run"]) {
    io.out(unit.trimEnd());
    return EXIT.ok;
  }
  const path = values.path ?? DEFAULT_UNIT_PATH;
  if (!existsSync(dirname(path))) {
    io.err(`paddock: ${dirname(path)} does not exist (is this a systemd machine?); --dry-run prints the unit`);
    return EXIT.failed;
  }
  try {
    writeFileSync(path, unit, { mode: 0o644 });
  } catch (error) {
    io.err(`paddock: cannot write ${path}: ${(error as Error).message}`);
    return EXIT.failed;
  }
  if (!existsSync(binary)) io.err(`paddock: note: ${binary} does not exist yet; install the binary there before starting the unit`);
  io.out(`wrote ${path} (starts ${binary})\nnext: systemctl daemon-reload && systemctl enable --now paddock`);
  return EXIT.ok;
}
