#!/usr/bin/env bash
# The fleet's boot scripts and systemd units; no model (the boot takes the packages from the worker
# image). Units are enabled, not started: the build VM has no GPU and no fleet metadata.
set -euo pipefail

src=/tmp/fleet
install -d -m 0755 /var/lib/fleet /var/log/fleet
install -m 0755 "${src}"/files/bin/fleet-* "${src}/files/bin/trtexec" /usr/local/bin/
install -m 0644 "${src}"/files/systemd/*.service /etc/systemd/system/

systemctl daemon-reload
systemctl enable fleet-metadata.service fleet-models.service fleet-health.service triton.service worker.service \
  fleet-dlq-handler.service
