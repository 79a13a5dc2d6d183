"""The VM's boot (packer/files/bin/fleet-boot-models, fleet-health) run offline with fakes on PATH.

docker, trtexec, gsutil and nvidia-smi are small scripts in tests/infra/fakes that record their calls;
the fake docker runs the real ``fleet models|engine`` commands of this checkout where the VM runs them
inside the worker image, so the packages, the cache key and the parity gate are the product's own.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.runtime.model_packages.tiny import write_package
from worker.runtime.model_packages.engine_build import cache_key, target_slug

from ._files import BIN, REPO

FAKES = Path(__file__).resolve().parent / "fakes"
IMAGE = "asia-northeast1-docker.pkg.dev/p/fleet/team:1"
CACHE = "gs://p-fleet-engines/engines"
TRT_VERSION = "10.3.0"


@dataclass
class Vm:
    """One fake VM: its directories, the environment of the boot, what the fakes recorded."""

    root: Path
    env: dict[str, str]

    @property
    def state(self) -> Path:
        return self.root / "var-lib-fleet"

    @property
    def run_dir(self) -> Path:
        return self.root / "run-fleet"

    @property
    def gcs(self) -> Path:
        return self.root / "gcs"

    def key(self) -> str:
        onnx = self.root / "image" / "opt" / "fleet" / "models" / "tiny" / "model.onnx"
        digest = hashlib.sha256(onnx.read_bytes()).hexdigest()
        return cache_key("tiny", digest, target_slug("NVIDIA L4", "8.9", TRT_VERSION))

    def cached(self, key: str) -> Path:
        return self.gcs / "p-fleet-engines" / "engines" / key

    def calls(self, tool: str) -> list[str]:
        log = self.root / "calls.log"
        lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
        return [line for line in lines if line.startswith(tool + " ")]

    def boot(self, **extra: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["bash", str(BIN / "fleet-boot-models")],
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        print(result.stdout, result.stderr, sep="\n")
        return result

    def status(self) -> str:
        return (self.run_dir / "boot.status").read_text(encoding="utf-8").strip()

    def engine(self) -> Path:
        return self.state / "model_repository" / "tiny" / "1" / "model.plan"


@pytest.fixture
def vm(tmp_path: Path) -> Vm:
    """A worker image holding the tiny package, an empty engine cache, the env files the units read."""
    write_package(tmp_path / "image" / "opt" / "fleet" / "models")
    run_dir = tmp_path / "run-fleet"
    run_dir.mkdir()
    (run_dir / "units.env").write_text(
        f"FLEET_CONTAINER_IMAGE={IMAGE}\nFLEET_ENGINE_CACHE={CACHE}\n", encoding="utf-8"
    )
    image_env = tmp_path / "image.env"
    image_env.write_text(
        f"FLEET_TRT_VERSION={TRT_VERSION}\nFLEET_TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:24.08-py3\n",
        encoding="utf-8",
    )
    env = {
        "PATH": f"{FAKES}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FLEET_RUN_DIR": str(run_dir),
        "FLEET_STATE_DIR": str(tmp_path / "var-lib-fleet"),
        "FLEET_IMAGE_ENV": str(image_env),
        "FLEET_PULL_RETRY_S": "0",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_GCS": str(tmp_path / "gcs"),
        "FAKE_IMAGE_ROOT": str(tmp_path / "image"),
        "FAKE_FLEET": str(Path(sys.executable).parent / "fleet"),
        "FAKE_WORKER_STATE": str(tmp_path / "worker-running"),
        "PYTHONPATH": str(REPO),
    }
    return Vm(tmp_path, env)


def test_cache_hit_serves_the_cached_engine_without_building(vm: Vm) -> None:
    # Given an engine in the cache under this model's digest x GPU x TensorRT version
    cached = vm.cached(vm.key())
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cached engine")
    # When the VM boots
    result = vm.boot()
    # Then that engine is served, nothing is built or uploaded, and the repository is complete
    assert result.returncode == 0, result.stderr
    assert vm.engine().read_bytes() == b"cached engine"
    assert vm.calls("trtexec") == []
    assert not [c for c in vm.calls("gsutil") if c.split()[-1].startswith("gs://")]
    assert (vm.state / "model_repository" / "tiny" / "config.pbtxt").is_file()
    assert vm.status() == "models-ready"
    pulls = vm.calls("docker pull")
    assert pulls and pulls[0].endswith(IMAGE)


def test_cache_miss_builds_the_fastest_precision_within_tolerance_and_uploads_it(vm: Vm) -> None:
    result = vm.boot(FAKE_TRT_ERROR_FP16="0.0001")
    assert result.returncode == 0, result.stderr
    builds = [c for c in vm.calls("trtexec") if "--saveEngine=" in c]
    assert len(builds) == 1 and "--fp16" in builds[0] and "--onnx=" in builds[0]
    assert "--maxShapes=FEATURES:8x4" in builds[0] and "--optShapes=FEATURES:4x4" in builds[0]
    runs = [c for c in vm.calls("trtexec") if "--loadEngine=" in c]
    assert len(runs) == 1 and "--loadInputs=FEATURES:" in runs[0] and "--shapes=FEATURES:2x4" in runs[0]
    assert vm.engine().read_text(encoding="utf-8").strip() == "fake engine precision=FP16"
    # uploaded with its provenance, for the next VM
    assert vm.cached(vm.key()).read_bytes() == vm.engine().read_bytes()
    provenance = json.loads(vm.cached(vm.key()).with_suffix(".json").read_text(encoding="utf-8"))
    assert provenance["precision"] == "FP16" and provenance["rejected"] == []
    assert provenance["measured"][0]["worst"] == pytest.approx(0.0001, abs=1e-6)
    assert vm.status() == "models-ready"


def test_fp16_outside_tolerance_is_rejected_and_fp32_served(vm: Vm) -> None:
    # The tiny package's tolerance is 0.01: FP16 off by 0.05 fails the gate, FP32 (exact) passes.
    result = vm.boot(FAKE_TRT_ERROR_FP16="0.05")
    assert result.returncode == 0, result.stderr
    builds = [c for c in vm.calls("trtexec") if "--saveEngine=" in c]
    assert ["--fp16" in b for b in builds] == [True, False] and "--noTF32" in builds[1]
    assert vm.engine().read_text(encoding="utf-8").strip() == "fake engine precision=FP32"
    provenance = json.loads(vm.cached(vm.key()).with_suffix(".json").read_text(encoding="utf-8"))
    assert provenance["precision"] == "FP32" and provenance["rejected"] == ["FP16"]
    assert [m["precision"] for m in provenance["measured"]] == ["FP16", "FP32"]
    assert provenance["measured"][0]["worst"] == pytest.approx(0.05, abs=1e-6)
    assert "tiny: chose FP32" in result.stdout


def test_no_precision_within_tolerance_fails_the_boot(vm: Vm) -> None:
    result = vm.boot(FAKE_TRT_ERROR_FP16="0.05", FAKE_TRT_ERROR_FP32="0.02")
    assert result.returncode != 0
    assert "FLEET BOOT FAILED: tiny: no engine precision within" in result.stderr
    assert "measured: FP16 0.05, FP32 0.02" in result.stderr
    assert vm.status().startswith("failed:")
    assert not vm.cached(vm.key()).exists(), "a rejected engine must never reach the cache"


def test_a_package_that_fails_validation_fails_the_boot(vm: Vm) -> None:
    toml = vm.root / "image" / "opt" / "fleet" / "models" / "tiny" / "model.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace('name = "FEATURES"', 'name = "WRONG"'))
    result = vm.boot()
    assert result.returncode != 0
    assert "FLEET BOOT FAILED: the model packages of " + IMAGE + " failed validation" in result.stderr
    assert vm.calls("trtexec") == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def health(vm: Vm) -> Iterator[tuple[Vm, str]]:
    """fleet-health serving the fake VM's status (with the fake docker on PATH)."""
    port = free_port()
    env = {**vm.env, "FLEET_HEALTH_PORT": str(port)}
    server = subprocess.Popen([sys.executable, str(BIN / "fleet-health")], env=env)
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield vm, url
    finally:
        server.terminate()
        server.wait(timeout=10)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_unpullable_image_fails_loudly_and_health_goes_down(health: tuple[Vm, str]) -> None:
    vm, url = health
    result = vm.boot(FAKE_UNPULLABLE=IMAGE)
    assert result.returncode != 0
    assert f"FLEET BOOT FAILED: cannot pull the worker image {IMAGE}" in result.stderr
    assert len(vm.calls("docker pull")) == 3, "retried before giving up"
    assert vm.calls("docker create") == [] and vm.calls("trtexec") == []
    code, body = get(url)
    assert code == 503 and "cannot pull the worker image" in body


def test_health_is_up_only_with_models_ready_and_the_worker_running(health: tuple[Vm, str]) -> None:
    vm, url = health
    assert get(url)[0] == 503, "before the boot ran"
    (vm.run_dir / "boot.status").write_text("models-ready\n", encoding="utf-8")
    code, body = get(url)
    assert code == 503 and "fleet-worker is not running" in body
    (vm.root / "worker-running").write_text("true\n", encoding="utf-8")
    assert get(url) == (200, "ok\n")
    assert get(url.replace("/healthz", "/other"))[0] == 404
