/** Where `paddock install-systemd` puts the binary's unit, and the binary the unit starts by default. */
export const DEFAULT_UNIT_PATH = "/etc/systemd/system/paddock.service";
export const DEFAULT_BINARY = "/usr/local/bin/paddock";

/**
 * The systemd unit of the daemon. systemd/paddock.service in the repository is this, with
 * the default binary (a test keeps the two equal and runs `systemd-analyze verify` on it).
 */
export function renderUnit(binary = DEFAULT_BINARY): string {
  if (!binary.startsWith("/") || /\s/.test(binary)) throw new Error(`the binary must be an absolute path without spaces: ${binary}`);
  return `# paddock: runs coding-agent task runs in sandboxes. Installed by \`paddock install-systemd\`.
# Settings: /etc/paddock/paddock.env (PADDOCK_LISTEN=…, PADDOCK_DEFAULT_PROVIDER=docker, …;
# see \`paddock serve --help\`). State: /var/lib/paddock (the database, keys, the admin token).
[Unit]
Description=paddock daemon (coding-agent task runs in sandboxes)
Wants=network-online.target
After=network-online.target docker.service
# Not Requires=docker.service: the local provider works without an engine.

[Service]
Type=notify
# READY=1 once the API listens, STOPPING=1 at SIGTERM, WATCHDOG=1 while the store takes writes.
NotifyAccess=main
WatchdogSec=60s
ExecStart=${binary} serve
Environment=PADDOCK_DATA_DIR=/var/lib/paddock
EnvironmentFile=-/etc/paddock/paddock.env
StateDirectory=paddock
StateDirectoryMode=0700
UMask=0077
# Local runners live in process groups of their own and carry on when the daemon restarts
# (the next start resumes their runs); systemd must stop only the daemon. Docker sandboxes
# are the engine's, outside this unit's cgroup anyway.
KillMode=process
# The daemon ends open streams and closes the database within 30 s of SIGTERM.
TimeoutStopSec=45s
Restart=on-failure
RestartSec=2s
LimitNOFILE=65536

# Hardening that leaves the docker provider's enforcement working: the daemon stays root
# with its capabilities (iptables needs CAP_NET_ADMIN; local agents get uids of their own),
# reaches the engine's socket (AF_UNIX) and the kernel's firewall (AF_NETLINK), and writes
# /var/lib (the state and local workspaces) and the repositories runs fetch results into —
# so no ProtectHome, no ProtectSystem=strict, no PrivateTmp (runners outlive a restart and
# must keep their /tmp), and no MemoryDenyWriteExecute (the JavaScript JIT needs it).
ProtectSystem=full
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

[Install]
WantedBy=multi-user.target
`;
}
