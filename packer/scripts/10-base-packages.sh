#!/usr/bin/env bash
# Base packages the other steps and the boot scripts use. Idempotent: apt-get install is a no-op when
# the packages are present.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

# The base image runs unattended-upgrades on first boot; wait for it instead of racing the dpkg lock.
if command -v cloud-init >/dev/null 2>&1; then
  cloud-init status --wait >/dev/null || true
fi

apt-get update -q
apt-get install -y -q --no-install-recommends ca-certificates curl gnupg jq logrotate

# gcloud (engine cache, Artifact Registry auth): Ubuntu's GCE images ship it as a snap; install the
# apt package only when it is missing.
if ! command -v gcloud >/dev/null 2>&1; then
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
    | gpg --batch --yes --dearmor -o /usr/share/keyrings/cloud.google.gpg
  echo "deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt cloud-sdk main" \
    >/etc/apt/sources.list.d/google-cloud-sdk.list
  apt-get update -q
  apt-get install -y -q --no-install-recommends google-cloud-cli
fi

# Workers must not upgrade packages (driver, docker) under a running job; new images carry updates.
systemctl disable --now unattended-upgrades.service apt-daily.timer apt-daily-upgrade.timer 2>/dev/null || true

# The accelerator base image ships the driver; fail the build early if it does not.
if ! modinfo nvidia >/dev/null 2>&1; then
  echo "NVIDIA kernel module not found: the base image must be an Ubuntu accelerator image" >&2
  exit 1
fi
