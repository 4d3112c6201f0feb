/** paddock's version: shown by --version, and part of every snapshot's key. */
export const PADDOCK_VERSION = "0.1.0";
