"""The wheel as a user installs it: outside the checkout, the client alone, then the worker extra.

One test, in order, because each step builds on the last and installs cost tens of seconds:
build the wheel from a copy of the sources; install it with its base (client) dependencies into a fresh
venv; from another directory, with nothing but environment variables, ``fleet submit --help`` works, the
SDK submits a job to the local stack and reads its result, ``tritonclient``/``numpy``/``PIL`` are absent,
``fleet worker`` says which extra to install and ``fleet devstack`` is not offered; then the ``worker``
extra makes ``fleet worker --help`` work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.dev.drawings import render_drawing
from worker.shared import environment, exit_codes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
INSTALL_TIMEOUT_S = 600
#: What a wheel build needs from the checkout (the sdist's content, without tests and tooling).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "worker")


def run(command: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float = 120) -> Any:
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def base_python() -> str:
    """The interpreter the project's venvs were made from (not this venv's, which has the product)."""
    return getattr(sys, "_base_executable", None) or shutil.which("python3.11") or sys.executable


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("wheel-source")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(source)],
        cwd=source,
        env=dict(os.environ),
        timeout_s=INSTALL_TIMEOUT_S,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (path,) = dist.glob("inference_fleet-*.whl")
    return path


@pytest.fixture(scope="module")
def worker_process(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One worker from the checkout's venv on the session stack: the fleet the installed SDK talks to."""
    log_path = tmp_path_factory.mktemp("wheel-worker") / "worker.log"
    env = {
        **os.environ,
        **stack.env,
        "FLEET_INSTANCE_NAME": "wheel-test-worker",
        "FLEET_WATCH_METADATA": "false",
        "FLEET_LOG_LEVEL": "WARNING",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        print("worker log tail:\n" + log_path.read_text(errors="replace")[-2000:])


SDK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import worker
    from worker.client import sdk

    job_id, path = sys.argv[1], sys.argv[2]
    with sdk.FleetClient(sdk.ClientSettings.from_env()) as client:
        receipt = client.submit([sdk.JobRequest(job_id, path)])
        outcome = client.wait(receipt.job_ids, timeout_s=240)[job_id]
        document = client.fetch_result(job_id)
    print(json.dumps({
        "package": worker.__file__,
        "status": outcome.status,
        "result_uri": outcome.result_uri,
        "job_id": document["job_id"],
        "label": document["outputs"]["classify"]["label"],
    }))
    """
)


def test_the_wheel_serves_a_client_alone_and_then_a_worker(
    wheel: Path, stack: Any, worker_process: None, tmp_path: Path
) -> None:
    # Given a fresh venv outside the checkout with the wheel and its base dependencies only
    venv = tmp_path / "venv"
    made = run([base_python(), "-m", "venv", str(venv)], cwd=tmp_path, env=dict(os.environ))
    assert made.returncode == 0, made.stderr
    python, fleet = str(venv / "bin" / "python"), str(venv / "bin" / "fleet")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    installed = run([*pip, str(wheel)], cwd=tmp_path, env=dict(os.environ), timeout_s=INSTALL_TIMEOUT_S)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # and an environment that has nothing of the checkout: only the stack's variables
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    names = (
        environment.PROJECT,
        environment.PUBSUB_EMULATOR_HOST,
        environment.STORAGE_EMULATOR_HOST,
        *environment.RESOURCE_VARIABLES,
    )
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    env.update({name: stack.env[name] for name in names})

    # When the client's commands run from another directory, then they work
    helped = run([fleet, "submit", "--help"], cwd=elsewhere, env=env)
    assert helped.returncode == 0 and "usage: fleet submit" in helped.stdout, helped.stderr
    # and the worker's heavy dependencies are not installed
    for module in ("tritonclient", "numpy", "PIL"):
        probe = run([python, "-c", f"import {module}"], cwd=elsewhere, env=env)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module
    # and `fleet worker` names the extra to install instead of a traceback
    worker_cmd = run([fleet, "worker"], cwd=elsewhere, env=env)
    assert worker_cmd.returncode == exit_codes.MISSING_EXTRA, worker_cmd.stderr
    assert "inference-fleet[worker]" in worker_cmd.stderr and "Traceback" not in worker_cmd.stderr
    # and the local stack's commands are not offered without the dev extra
    overview = run([fleet, "--help"], cwd=elsewhere, env=env)
    assert overview.returncode == 0 and "devstack" not in overview.stdout and "submit" in overview.stdout

    # When the installed SDK submits a drawing and reads its result with only the environment
    drawing = elsewhere / "gear.png"
    data, label = render_drawing(7, size=(840, 594))
    drawing.write_bytes(data)
    job_id = f"wheel-{os.getpid()}-{tmp_path.name[-6:]}"
    (elsewhere / "submit.py").write_text(SDK_SCRIPT, encoding="utf-8")
    submitted = run([python, "submit.py", job_id, str(drawing)], cwd=elsewhere, env=env, timeout_s=300)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    answer = json.loads(submitted.stdout.strip().splitlines()[-1])
    # then it ran from the installed wheel, not the checkout, and got this job's own result
    assert answer["package"].startswith(str(venv)), answer
    assert answer["status"] == "succeeded" and answer["job_id"] == job_id, answer
    assert answer["result_uri"].endswith(f"{job_id}.json") and answer["label"] == label, answer

    # When the worker extra is added, then `fleet worker --help` works from the wheel
    extra = run([*pip, f"{wheel}[worker]"], cwd=tmp_path, env=dict(os.environ), timeout_s=INSTALL_TIMEOUT_S)
    assert extra.returncode == 0, extra.stderr[-3000:]
    worker_help = run([fleet, "worker", "--help"], cwd=elsewhere, env=env)
    assert worker_help.returncode == 0 and "usage: fleet worker" in worker_help.stdout, worker_help.stderr
    # and the bundled model packages (declarations, handlers, ONNX, reference inputs) ship in the wheel:
    # the worker's default FLEET_MODELS_DIR loads from the installed package, as the checkout's does
    probe = (
        "from worker.runtime.model_packages.loader import BUNDLED_MODELS_DIR, load_packages;"
        "c = load_packages(BUNDLED_MODELS_DIR); print(BUNDLED_MODELS_DIR);"
        "print(' '.join(sorted(p.folder.name for p in c.packages)))"
    )
    bundled = run([python, "-c", probe], cwd=elsewhere, env=env)
    assert bundled.returncode == 0, bundled.stderr[-3000:]
    where, names = bundled.stdout.strip().splitlines()
    assert where.startswith(str(venv))
    expected = sorted(p.name for p in (REPO / "worker" / "models").iterdir() if (p / "model.toml").is_file())
    assert names.split() == expected
