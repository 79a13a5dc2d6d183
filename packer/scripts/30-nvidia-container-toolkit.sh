#!/usr/bin/env bash
# NVIDIA container toolkit so `docker run --gpus all` reaches the driver of the base image.
set -euo pipefail

: "${NVIDIA_CONTAINER_TOOLKIT_VERSION:?NVIDIA_CONTAINER_TOOLKIT_VERSION must be set (e.g. 1.17.3-1)}"
export DEBIAN_FRONTEND=noninteractive

keyring=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
if [[ ! -s "${keyring}" ]]; then
  curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --batch --yes --dearmor -o "${keyring}"
fi
curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \
  | sed "s#deb https://#deb [signed-by=${keyring}] https://#g" \
  >/etc/apt/sources.list.d/nvidia-container-toolkit.list
apt-get update -q

v="${NVIDIA_CONTAINER_TOOLKIT_VERSION}"
apt-get install -y -q --no-install-recommends \
  "nvidia-container-toolkit=${v}" "nvidia-container-toolkit-base=${v}" \
  "libnvidia-container-tools=${v}" "libnvidia-container1=${v}"
apt-mark hold nvidia-container-toolkit nvidia-container-toolkit-base libnvidia-container-tools libnvidia-container1

# Registers the nvidia runtime in /etc/docker/daemon.json (merging with ours); rerunning is harmless.
nvidia-ctk runtime configure --runtime=docker
systemctl restart docker.service

# Persistence mode keeps the driver initialised between containers (saves seconds on every start).
systemctl enable nvidia-persistenced.service 2>/dev/null || true
