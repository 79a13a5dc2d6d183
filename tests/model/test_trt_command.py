"""scripts/build_trt_engine: the commands it builds (no GPU here; the build itself runs on the target GPU)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from worker.models.drawing_analyzer import model_spec

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_trt_engine"


@pytest.fixture(scope="module")
def trt() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("build_trt_engine", str(SCRIPT))
    spec = importlib.util.spec_from_loader("build_trt_engine", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_trt_engine"] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


L4 = ("NVIDIA L4", "8.9", "10.3.0")


def test_engine_name_records_gpu_cc_trt_and_precision(trt: ModuleType) -> None:
    target = trt.Target(*L4)
    assert trt.engine_name(target, "fp16") == "drawing_analyzer.nvidia-l4.sm89.trt10.3.fp16.plan"
    h100 = trt.Target("NVIDIA H100 80GB HBM3", "9.0", "10.7.0.23")
    assert trt.engine_name(h100, "fp32") == "drawing_analyzer.nvidia-h100-80gb-hbm3.sm90.trt10.7.fp32.plan"


def test_fp16_is_the_default_command(trt: ModuleType, tmp_path: Path) -> None:
    command = trt.trtexec_command(Path("m.onnx"), tmp_path / "e.plan", "fp16")
    assert command[0] == "trtexec"
    assert "--onnx=m.onnx" in command
    assert f"--saveEngine={tmp_path / 'e.plan'}" in command
    assert "--fp16" in command
    assert "--int8" not in command


def test_profile_matches_max_batch_size(trt: ModuleType, tmp_path: Path) -> None:
    command = trt.trtexec_command(Path("m.onnx"), tmp_path / "e.plan", "fp32")
    per_item = "x".join(str(d) for d in model_spec.INPUT.shape)
    assert f"--minShapes=IMAGE:1x{per_item}" in command
    assert f"--maxShapes=IMAGE:{model_spec.MAX_BATCH_SIZE}x{per_item}" in command
    opt = next(c for c in command if c.startswith("--optShapes="))
    assert 1 <= int(opt.split(":")[1].split("x")[0]) <= model_spec.MAX_BATCH_SIZE
    assert "--fp16" not in command
    assert "--int8" not in command


def test_int8_uses_a_calibration_cache_from_generated_drawings(trt: ModuleType, tmp_path: Path) -> None:
    cache = tmp_path / "c.calib"
    command = trt.trtexec_command(Path("m.onnx"), tmp_path / "e.plan", "int8", calibration_cache=cache)
    assert "--int8" in command
    assert f"--calib={cache}" in command
    calibrate = trt.calibration_command(Path("m.onnx"), cache)
    assert calibrate[:2] == ["polygraphy", "convert"]
    assert any(arg.endswith("trt_calibration_data.py:load_data") for arg in calibrate)
    assert (
        f"IMAGE:[{model_spec.MAX_BATCH_SIZE},1,{model_spec.INPUT_SIZE_PX},{model_spec.INPUT_SIZE_PX}]"
        in calibrate
    )


def test_unknown_precision(trt: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="precision"):
        trt.trtexec_command(Path("m.onnx"), tmp_path / "e.plan", "fp8")


def test_dry_run_prints_and_builds_nothing(
    trt: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--dry-run", "--gpu-name", L4[0], "--compute-capability", L4[1], "--trt-version", L4[2]]
    assert trt.main([*args, "--fp32", "--out-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "+ trtexec --onnx=" in out
    assert "drawing_analyzer.nvidia-l4.sm89.trt10.3.fp32.plan" in out
    assert not (tmp_path / "out").exists()


def test_onnx_default_is_the_one_committed_copy(trt: ModuleType) -> None:
    assert trt.DEFAULT_ONNX.parts[-4:] == ("worker", "models", "drawing_analyzer", "model.onnx")
