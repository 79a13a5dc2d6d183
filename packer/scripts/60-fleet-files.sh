#!/usr/bin/env bash
# The fleet's boot scripts, systemd units and model repository. Units are enabled, not started: the
# build VM has no GPU and no fleet metadata.
set -euo pipefail

src=/tmp/fleet
install -d -m 0755 /opt/fleet /opt/fleet/onnx /var/lib/fleet /var/log/fleet
install -m 0755 "${src}"/files/bin/fleet-* /usr/local/bin/
install -m 0644 "${src}"/files/systemd/*.service /etc/systemd/system/

# The baked repository is the template; fleet-trt-engine copies it to /var/lib/fleet at boot and adds
# the engine for this VM's GPU, so the image itself stays GPU-agnostic.
rm -rf /opt/fleet/model_repository
cp -r "${src}/model_repository" /opt/fleet/model_repository
install -m 0644 "${src}/model.onnx" /opt/fleet/onnx/model.onnx

systemctl daemon-reload
systemctl enable fleet-metadata.service fleet-trt-engine.service triton.service worker.service fleet-dlq-handler.service
