#!/usr/bin/env bash
# Google Cloud Ops Agent: ships the worker's JSON logs and scrapes Triton's Prometheus metrics.
set -euo pipefail

if ! dpkg -s google-cloud-ops-agent >/dev/null 2>&1; then
  installer="$(mktemp)"
  curl -fsSL https://dl.google.com/cloudagents/add-google-cloud-ops-agent-repo.sh -o "${installer}"
  bash "${installer}" --also-install
  rm -f "${installer}"
fi

install -d -m 0755 /etc/google-cloud-ops-agent /var/log/fleet
install -m 0644 /tmp/fleet/files/ops-agent/config.yaml /etc/google-cloud-ops-agent/config.yaml
install -m 0644 /tmp/fleet/files/logrotate/fleet /etc/logrotate.d/fleet
systemctl enable google-cloud-ops-agent.service
systemctl restart google-cloud-ops-agent.service
