# inference-fleet: every target bootstraps what it needs from a fresh clone.
#   make demo   - the main job on the local stack (emulators + real tritonserver on CPU)
#   make test   - ruff + mypy strict + lint-infra + the whole pytest suite (unit and integration)
PYTHON ?= python3.11
VENV := .venv
TRITON_VENV := .venv-triton
TRAIN_VENV := .venv-train
PY := $(VENV)/bin/python
PIP_FLAGS := --quiet --disable-pip-version-check
# Python entry points without a .py suffix: ruff only finds them when named.
PY_SCRIPTS := scripts/bench scripts/bench-gpu scripts/build_trt_engine scripts/chaos scripts/decode-bench scripts/demo \
  scripts/devstack scripts/simulate
PY_SOURCES := worker tests scripts $(PY_SCRIPTS)

.PHONY: all venv triton-venv test demo lint format typecheck check lint-infra image image-test bench chaos simulate train devstack-up devstack-down clean pubsub-fidelity train-symbols bench-decode bench-gpu

all: test

# The product's venv: the worker, the client, emulators, test and lint tools.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@
venv: $(VENV)/.installed

# tritonserver (CPU build with the python backend) ships in the nvidia-pytriton wheel, which pins
# numpy<2, so it lives in a venv of its own; the python-backend model imports onnxruntime from it.
$(TRITON_VENV)/.installed: scripts/requirements-triton.txt
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(TRITON_VENV)/bin/pip install $(PIP_FLAGS) -r scripts/requirements-triton.txt
	touch $@
triton-venv: $(TRITON_VENV)/.installed

test: venv triton-venv lint typecheck lint-infra image-test
	$(PY) -m pytest -q

demo: venv triton-venv
	$(PY) scripts/demo

lint: venv
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)

format: venv
	$(VENV)/bin/ruff format $(PY_SOURCES)
	$(VENV)/bin/ruff check --fix $(PY_SOURCES)

typecheck: venv
	$(VENV)/bin/mypy

check: test

lint-infra: venv
	scripts/lint-infra

# The worker image, built offline with rootful podman (scripts/build-image; docs/deploy.md for the real
# build). image-test also builds a team image with a test package and runs the checks inside both.
image: venv
	scripts/build-image

image-test: venv
	scripts/build-image --test

bench: venv triton-venv
	$(PY) scripts/bench

# On a GPU machine (NVIDIA driver + trtexec + a TensorRT tritonserver or docker with the NVIDIA runtime):
# TensorRT engines, the GPU repository served, scripts/bench against it, in <= 10 minutes
# (docs/performance.md "Capacity projection"). Without a GPU it exits 2 at once.
bench-gpu: venv
	$(PY) scripts/bench-gpu

# Decoders side by side (docs/performance.md "Decoders"); --quick runs in under a minute.
bench-decode: venv
	$(VENV)/bin/pip install $(PIP_FLAGS) -r scripts/requirements-decode-bench.txt || \
	  echo 'some candidate decoders did not install; the bench skips them and says why'
	$(PY) scripts/decode-bench

chaos: venv triton-venv
	$(PY) scripts/chaos

simulate: venv
	$(PY) scripts/simulate

# Training is not part of `make test`: the trained ONNX model is committed (small) with this recipe.
$(TRAIN_VENV)/.installed: scripts/requirements-train.txt
	$(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(TRAIN_VENV)/bin/pip install $(PIP_FLAGS) -r scripts/requirements-train.txt
	$(TRAIN_VENV)/bin/pip install $(PIP_FLAGS) --no-deps -e .
	touch $@
train: $(TRAIN_VENV)/.installed
	$(TRAIN_VENV)/bin/python scripts/train_model.py

devstack-up: venv triton-venv
	$(PY) scripts/devstack up

devstack-down: venv
	$(PY) scripts/devstack down

clean:
	-$(PY) scripts/devstack down
	rm -rf $(VENV) $(TRITON_VENV) $(TRAIN_VENV) .devstack .pytest_cache .mypy_cache .ruff_cache

# Google's own Pub/Sub system tests (tests/system.py from the google-cloud-pubsub sdist, pinned to the
# installed client) against our emulator, gRPC cases only; prints pass/fail counts with the known
# not-implemented cases explained. Takes minutes (the suite waits out real ack deadlines): not in `make test`.
pubsub-fidelity: venv
	$(PY) -m worker.dev.devstack.system_tests

# OCR on generated drawings: ground-truth recall, agreement with RapidOCR's own pipeline, per-stage CPU,
# the angle classifier's and FP16's effect (worker/dev/ocr_eval.py); one JSON document, ~10 minutes on 2 cores.
.PHONY: ocr-eval
ocr-eval: venv
	$(PY) -m worker.dev.ocr_eval

# The second bundled model (symbol recognition) from the generator; CPU, 2 threads, a few minutes.
train-symbols: $(TRAIN_VENV)/.installed
	$(TRAIN_VENV)/bin/python scripts/train_symbols.py
