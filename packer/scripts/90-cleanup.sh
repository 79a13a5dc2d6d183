#!/usr/bin/env bash
# Leave nothing of the build behind: apt caches, the staged files, the build VM's identity.
set -euo pipefail

rm -rf /tmp/fleet
apt-get clean
rm -rf /var/lib/apt/lists/*
# Every VM must generate its own machine id and SSH host keys.
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -f /etc/ssh/ssh_host_*
cloud-init clean --logs 2>/dev/null || true
