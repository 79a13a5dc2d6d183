# The fleet worker image: `fleet worker` / `fleet dlq-handler` on a GPU VM, and the model packages the
# VM's boot turns into TensorRT engines (docs/deploy.md, packer/README.md).
#   docker build -t REGION-docker.pkg.dev/PROJECT/fleet/worker:TAG .        # from PyPI
#   make image                                                              # offline (scripts/build-image)
# A team's own image is a short Dockerfile FROM this one that adds its packages under /opt/fleet/models
# (tests/infra/team_image/Dockerfile is the one CI builds).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Offline builds pass "--no-index --find-links=/wheels" with the wheels bind-mounted (scripts/build-image);
# empty means PyPI.
ARG PIP_OPTIONS=""

LABEL org.opencontainers.image.title="inference-fleet worker" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/fleet/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLEET_MODELS_DIR=/opt/fleet/models

WORKDIR /tmp/src
COPY pyproject.toml README.md LICENSE ./
COPY worker ./worker
# The `models` extra (onnxruntime) is in the image: the VM's boot runs `fleet engine reference|decide`
# (ONNX reference outputs, the parity decision) and `fleet models check` from this image.
# hadolint ignore=DL3013,SC2086
RUN python3 -m venv /opt/fleet/venv \
    && pip install --no-cache-dir ${PIP_OPTIONS} '.[worker,models]' \
    && install -d -m 0755 /opt/fleet/models \
    && cp -r worker/models/. /opt/fleet/models/ \
    && find /opt/fleet/models -name '__pycache__' -prune -exec rm -rf {} + \
    && rm -rf /tmp/src \
    && useradd --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin fleet

WORKDIR /
USER 10001:10001
ENTRYPOINT ["fleet"]
CMD ["--help"]
