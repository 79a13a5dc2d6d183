#!/usr/bin/env bash
# Pre-pull the container images so a scale-out does not spend minutes downloading them, and record the
# TensorRT version the engines are built with (it is part of the engine cache key).
set -euo pipefail

: "${TRITON_IMAGE:?TRITON_IMAGE must be set}"
: "${TENSORRT_IMAGE:?TENSORRT_IMAGE must be set}"
WORKER_IMAGE="${WORKER_IMAGE:-}"

pull() {
  local image="$1"
  if ! docker image inspect "${image}" >/dev/null 2>&1; then
    docker pull --quiet "${image}"
  fi
}

pull "${TRITON_IMAGE}"
pull "${TENSORRT_IMAGE}"
if [[ -n "${WORKER_IMAGE}" ]]; then
  # Private registries (Artifact Registry) authenticate with the build VM's service account.
  if [[ "${WORKER_IMAGE}" == *-docker.pkg.dev/* ]]; then
    gcloud auth configure-docker --quiet "${WORKER_IMAGE%%/*}"
  fi
  pull "${WORKER_IMAGE}"
fi

# Importing tensorrt needs no GPU; the build VM has none.
trt_version="$(docker run --rm --entrypoint python3 "${TENSORRT_IMAGE}" -c 'import tensorrt; print(tensorrt.__version__)')"
if [[ ! "${trt_version}" =~ ^[0-9]+(\.[0-9]+)+$ ]]; then
  echo "could not read the TensorRT version from ${TENSORRT_IMAGE}: '${trt_version}'" >&2
  exit 1
fi

install -d -m 0755 /etc/fleet
cat >/etc/fleet/image.env <<ENV
# Written at image build time by packer/scripts/50-pull-images.sh; read by the fleet systemd units.
FLEET_TRITON_IMAGE=${TRITON_IMAGE}
FLEET_TENSORRT_IMAGE=${TENSORRT_IMAGE}
FLEET_TRT_VERSION=${trt_version}
FLEET_IMAGE_VERSION=${IMAGE_VERSION:-dev}
ENV
chmod 0644 /etc/fleet/image.env
