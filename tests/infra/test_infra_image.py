"""Static checks of the Packer image: template, provisioning scripts, systemd units and the preemption
budget (worker drain < docker stop -t < systemd TimeoutStopSec < the 30 s spot notice)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from worker.runtime.model_packages import engine_build
from worker.runtime.settings import WorkerSettings

from ._files import BIN, PACKER, REPO, SPOT_NOTICE_S, TERRAFORM, UNITS, blocks, parse_hcl, parse_unit, seconds

CONTAINER_UNITS = ("worker.service", "fleet-dlq-handler.service")


def drain_budget_s() -> float:
    default = WorkerSettings.__dataclass_fields__["drain_budget_s"].default
    assert isinstance(default, float | int)
    return float(default)


def stop_numbers(unit: Path) -> tuple[float, float, float]:
    """(docker stop -t, docker run --stop-timeout, TimeoutStopSec) of a container unit."""
    service = parse_unit(unit)["Service"]
    (exec_stop,) = service["ExecStop"]
    (exec_start,) = service["ExecStart"]
    stop_t = re.search(r"docker stop -t (\d+)", exec_stop)
    run_t = re.search(r"--stop-timeout (\d+)", exec_start)
    assert stop_t and run_t, unit.name
    (timeout,) = service["TimeoutStopSec"]
    return float(stop_t.group(1)), float(run_t.group(1)), seconds(timeout)


@pytest.mark.parametrize("unit", CONTAINER_UNITS)
def test_drain_fits_inside_the_spot_notice(unit: str) -> None:
    docker_stop_s, run_stop_s, systemd_stop_s = stop_numbers(UNITS / unit)
    drain = drain_budget_s()
    assert drain < docker_stop_s, "docker must not kill the worker before its drain budget"
    assert run_stop_s == docker_stop_s
    assert docker_stop_s < systemd_stop_s, "systemd must not kill docker stop before it returns"
    assert systemd_stop_s < SPOT_NOTICE_S, "everything has to finish before the hard power-off"


def test_terraform_caps_the_drain_budget_below_docker_stop() -> None:
    docker_stop_s, _, _ = stop_numbers(UNITS / "worker.service")
    worker = blocks("variable")["worker"]
    default = re.search(r"drain_budget_s\s*=\s*optional\(number,\s*([\d.]+)\)", worker["type"])
    assert default and float(default.group(1)) == drain_budget_s(), "module default = worker default"
    conditions = " ".join(v["condition"] for v in worker["validation"])
    cap = re.search(r"var\.worker\.drain_budget_s <= (\d+)", conditions)
    assert cap and float(cap.group(1)) < docker_stop_s


def test_units_parse_and_install() -> None:
    units = sorted(UNITS.glob("*.service"))
    assert {u.name for u in units} == {
        "fleet-metadata.service",
        "fleet-models.service",
        "fleet-health.service",
        "triton.service",
        "worker.service",
        "fleet-dlq-handler.service",
    }
    enable = (PACKER / "scripts" / "60-fleet-files.sh").read_text(encoding="utf-8")
    for unit in units:
        parsed = parse_unit(unit)
        assert {"Unit", "Service", "Install"} <= set(parsed), unit.name
        assert parsed["Install"]["WantedBy"] == ["multi-user.target"], unit.name
        assert unit.name in enable, f"{unit.name} is not enabled by 60-fleet-files.sh"
        for key in ("ExecStart", "ExecStartPost", "ExecStop"):
            for command in parsed["Service"].get(key, []):
                binary = command.lstrip("-").split()[0]
                assert binary.startswith("/"), f"{unit.name}: {key} needs an absolute path"
                if binary.startswith("/usr/local/bin/fleet-"):
                    assert (BIN / Path(binary).name).is_file(), binary


def test_worker_runs_the_metadata_image_after_triton_is_ready() -> None:
    unit = parse_unit(UNITS / "worker.service")
    assert "triton.service" in unit["Unit"]["After"][0] and "triton.service" in unit["Unit"]["Requires"][0]
    service = unit["Service"]
    (start,) = service["ExecStart"]
    assert "docker run" in start and "--gpus all" in start
    assert "${FLEET_CONTAINER_IMAGE}" in start and "--env-file /run/fleet/worker.env" in start
    assert service["EnvironmentFile"] == ["/run/fleet/units.env"]
    assert service["Restart"] == ["always"]
    triton = parse_unit(UNITS / "triton.service")
    assert triton["Service"]["ExecStartPost"] == ["/usr/local/bin/fleet-wait-triton"]
    assert "fleet-models.service" in triton["Unit"]["Requires"][0]
    assert "--gpus all" in triton["Service"]["ExecStart"][0]
    assert "8002" in triton["Service"]["ExecStart"][0], "the Ops Agent scrapes Triton metrics there"


def test_metadata_keys_written_by_terraform_are_read_on_the_vm() -> None:
    reader = (BIN / "fleet-metadata-env").read_text(encoding="utf-8")
    metadata = (TERRAFORM / "main.tf").read_text(encoding="utf-8")
    for key in ("fleet-container-image", "fleet-env", "fleet-engine-cache", "fleet-dlq-handler"):
        assert key in metadata and f"instance/attributes/{key}" in reader, key


def build_trt_engine() -> ModuleType:
    """The model owner's scripts/build_trt_engine as a module (it has no .py suffix)."""
    path = REPO / "scripts" / "build_trt_engine"
    loader = importlib.machinery.SourceFileLoader("build_trt_engine", str(path))
    spec = importlib.util.spec_from_loader("build_trt_engine", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class body runs.
    sys.modules["build_trt_engine"] = module
    try:
        loader.exec_module(module)
    finally:
        del sys.modules["build_trt_engine"]
    return module


@pytest.mark.parametrize(
    ("gpu", "cc", "trt"),
    [
        ("NVIDIA L4", "8.9", "10.3.0"),
        ("Tesla T4", "7.5", "10.3.1"),
        ("NVIDIA H100 80GB HBM3", "9.0", "10.8.0"),
    ],
)
def test_boot_engine_key_names_the_gpu_as_the_build_script_does(gpu: str, cc: str, trt: str) -> None:
    """The cache key's GPU part (compute capability, TensorRT major.minor) is build_trt_engine's, so
    engines built by hand on a GPU can pre-warm the cache under the same name."""
    slug = engine_build.target_slug(gpu, cc, trt)
    assert f".sm{cc.replace('.', '')}." in f".{slug}" and slug.endswith(f".trt{'.'.join(trt.split('.')[:2])}")
    assert slug == build_trt_engine().Target(gpu, cc, trt).slug
    key = engine_build.cache_key("tiny", "ab" * 32, slug)
    assert key == f"tiny/{'ab' * 32}/tiny.{slug}.plan"


def test_the_vm_image_bakes_no_model() -> None:
    """Generic VM image: no model repository or ONNX in the template, no model name in the metadata."""
    template = (PACKER / "fleet-worker.pkr.hcl").read_text(encoding="utf-8")
    assert "model_repository" not in template and ".onnx" not in template
    variables = blocks("variable", sorted(PACKER.glob("*.pkr.hcl")))
    assert not {"model_input", "trt_precision", "model_repository_dir", "onnx_model_path"} & set(variables)
    assert "FLEET_MODEL_NAME" not in (TERRAFORM / "main.tf").read_text(encoding="utf-8")
    boot = (BIN / "fleet-boot-models").read_text(encoding="utf-8")
    assert "--query-gpu=name,compute_cap" in boot and "IMAGE_MODELS_DIR=/opt/fleet/models" in boot
    assert "ENV " in (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert "FLEET_MODELS_DIR=/opt/fleet/models" in (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert "FLEET_TRT_VERSION=" in (PACKER / "scripts" / "50-pull-images.sh").read_text(encoding="utf-8")


def test_provisioning_scripts_are_strict_and_executable() -> None:
    scripts = sorted((PACKER / "scripts").glob("*.sh")) + sorted(BIN.glob("*"))
    assert len(scripts) >= 8
    for script in scripts:
        if script.name == "fleet-health":  # python, standard library: tests/infra/test_boot.py runs it
            assert os.access(script, os.X_OK)
            continue
        lines = script.read_text(encoding="utf-8").splitlines()
        assert lines[0] == "#!/usr/bin/env bash", script.name
        assert "set -euo pipefail" in lines, script.name
        assert os.access(script, os.X_OK), f"{script.name} is not executable"


def test_packer_template_matches_the_module() -> None:
    variables = blocks("variable", sorted(PACKER.glob("*.pkr.hcl")))
    tf_variables = blocks("variable")
    assert variables["image_family"]["default"] == tf_variables["image_family"]["default"]
    template = parse_hcl(PACKER / "fleet-worker.pkr.hcl")
    build = template["build"][0]
    scripts = build["provisioner"][-1]["shell"]["scripts"]
    on_disk = sorted(p.name for p in (PACKER / "scripts").glob("*.sh"))
    assert [s.rsplit("/", 1)[-1] for s in scripts] == on_disk
    # required_plugins stays out of the template: packer 1.6.6 (offline validation) rejects it.
    assert "packer" not in template
    assert "required_plugins" in parse_hcl(PACKER / "plugins.pkr.hcl")["packer"][0]
