"""scripts/bench-gpu on a machine without a GPU: fails fast and says why; --dry-run plans every step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench-gpu"


def _run(args: list[str], path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": path},
        cwd=ROOT,
        check=False,
    )


def test_without_nvidia_smi_it_exits_2_at_once_naming_it(tmp_path: Path) -> None:
    done = _run(["--workdir", str(tmp_path / "w")], str(tmp_path))
    assert done.returncode == 2
    assert "no GPU: nvidia-smi is not on PATH" in done.stderr
    assert not (tmp_path / "w" / "repository").exists()  # nothing was built


def test_a_failing_nvidia_smi_is_no_gpu_too(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed: no devices were found' >&2\nexit 9\n")
    fake.chmod(0o755)
    done = _run(["--workdir", str(tmp_path / "w")], f"{tmp_path}:/usr/bin:/bin")
    assert done.returncode == 2
    assert "no devices were found" in done.stderr


def test_dry_run_plans_engines_server_and_bench(tmp_path: Path) -> None:
    args = ["--dry-run", "--gpu-name", "NVIDIA L4", "--compute-capability", "8.9", "--trt-version", "10.3.0"]
    done = _run(
        [*args, "--workdir", str(tmp_path), "--precision", "int8", "--", "--jobs", "50"], "/usr/bin:/bin"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    builds = [line for line in lines if line.startswith("+ trtexec")]
    assert len(builds) == 2  # one engine per bundled package
    assert all("--int8 --fp16" in line and "--optShapes=" in line for line in builds)
    assert any("--maxShapes=IMAGE:32x1x192x192" in line for line in builds)
    assert any("docker run --rm" in line and "--gpus all" in line for line in lines)
    assert lines[-1].endswith(f"--model-repository {tmp_path / 'repository'} --jobs 50")


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    assert _run(["--dry-run"], str(tmp_path)).returncode == 2
    bad = _run(["--deadline-s", "0"], str(tmp_path))
    assert bad.returncode == 2 and "--deadline-s must be positive" in bad.stderr
