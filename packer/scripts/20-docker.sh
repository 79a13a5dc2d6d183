#!/usr/bin/env bash
# Docker CE from Docker's apt repository, version pinned by DOCKER_VERSION (an apt version prefix).
set -euo pipefail

: "${DOCKER_VERSION:?DOCKER_VERSION must be set (apt version prefix, e.g. 5:27.3)}"
export DEBIAN_FRONTEND=noninteractive

keyring=/etc/apt/keyrings/docker.asc
if [[ ! -s "${keyring}" ]]; then
  install -m 0755 -d /etc/apt/keyrings
  curl -fsSL https://download.docker.com/linux/ubuntu/gpg -o "${keyring}"
  chmod a+r "${keyring}"
fi

# shellcheck source=/dev/null
codename="$(. /etc/os-release && echo "${VERSION_CODENAME}")"
echo "deb [arch=$(dpkg --print-architecture) signed-by=${keyring}] https://download.docker.com/linux/ubuntu ${codename} stable" \
  >/etc/apt/sources.list.d/docker.list
apt-get update -q

version="$(apt-cache madison docker-ce | awk -v want="${DOCKER_VERSION}" 'index($3, want) == 1 { print $3; exit }')"
if [[ -z "${version}" ]]; then
  echo "no docker-ce version matching ${DOCKER_VERSION}" >&2
  exit 1
fi
apt-get install -y -q --no-install-recommends \
  "docker-ce=${version}" "docker-ce-cli=${version}" containerd.io docker-buildx-plugin
apt-mark hold docker-ce docker-ce-cli

install -m 0644 /tmp/fleet/files/docker/daemon.json /etc/docker/daemon.json
systemctl enable docker.service
systemctl restart docker.service
