"""docs/models.md's walkthrough, run as written: from a package folder to a served model and back.

The section "From your ONNX file to a served model" holds a JSONL manifest block and one ``sh`` block of
commands. This test reads both from the doc, writes a package made here (the tiny ONNX of tiny.py as
``my_models/my_model`` with the analysis ``my_score``) next to them, runs the commands in one bash shell
in a fresh directory with nothing of the test's environment (only ``PATH`` with the venv's ``fleet``),
and checks each command's output. A command added to the doc without an expectation here fails the test,
and so does one the doc drops, so the doc and the test cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.dev.devstack import stack

from . import tiny

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[3]
DOC = REPO_ROOT / "docs" / "models.md"
SECTION = "## From your ONNX file to a served model"
MAX_COMMANDS = 10
MARK = "@@@ walkthrough command "
WALKTHROUGH_TIMEOUT_S = 240


def _ok_json_lines(model: str) -> Callable[[str, Path], None]:
    def check(out: str, cwd: Path) -> None:
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert len(lines) == 2, out  # one per reference input
        assert all(line["model"] == model and "label" in line["outputs"]["my_score"] for line in lines)

    return check


def _status(out: str, cwd: Path) -> None:
    document = json.loads(out)
    assert document["job_id"] == "my-first-job" and document["status"] == "succeeded", document
    assert document["outputs"]["my_score"]["label"] in {"low", "mid", "high"}


def _gpu_repository(out: str, cwd: Path) -> None:
    config = (cwd / "gpu-repository" / "my_model" / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in config and 'name: "my_model"' in config


def _contains(*fragments: str) -> Callable[[str, Path], None]:
    def check(out: str, cwd: Path) -> None:
        for fragment in fragments:
            assert fragment in out, (fragment, out)

    return check


def _nothing(out: str, cwd: Path) -> None:
    assert "error" not in out.lower(), out


#: Each command of the doc, as written there -> the check of its output.
EXPECTED: dict[str, Callable[[str, Path], None]] = {
    "fleet models check my_models/my_model": _ok_json_lines("my_model"),
    "fleet devstack up --models my_models --work-dir .devstack": _contains("devstack up in", "env written"),
    "source .devstack/env": _nothing,
    "fleet worker > worker.log 2>&1 &": _nothing,
    "fleet submit my_jobs.jsonl --wait": _contains("1 succeeded"),
    "fleet status my-first-job --json": _status,
    "kill %1": _nothing,
    "fleet devstack down --work-dir .devstack": _contains(
        "triton: stopped", "pubsub: stopped", "gcs: stopped"
    ),
    "fleet models repository my_models --variant gpu --out gpu-repository": _gpu_repository,
}


def walkthrough() -> tuple[list[str], list[str]]:
    """(the manifest's lines, the commands) of the doc's walkthrough section."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    manifests = [body for lang, body in blocks if not lang and body.lstrip().startswith("{")]
    shells = [body for lang, body in blocks if lang == "sh"]
    assert len(manifests) == 1 and len(shells) == 1, blocks
    commands = [line.strip() for line in shells[0].splitlines() if line.strip()]
    return manifests[0].splitlines(), commands


def test_the_doc_lists_at_most_ten_commands_and_the_test_checks_each() -> None:
    _manifest, commands = walkthrough()
    assert len(commands) <= MAX_COMMANDS
    assert commands == list(EXPECTED)


def _script(commands: list[str]) -> str:
    """The commands in one shell, each after a marker line; whatever fails, the stack is stopped."""
    lines = [
        "set -euo pipefail",
        "trap 'kill %1 2>/dev/null; fleet devstack down --work-dir .devstack >/dev/null 2>&1' ERR",
    ]
    for index, command in enumerate(commands):
        lines += [f"echo {shlex.quote(f'{MARK}{index}')}", command]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(WALKTHROUGH_TIMEOUT_S + 60)
def test_the_walkthrough_serves_a_package_made_in_the_test(tmp_path: Path) -> None:
    # Given a package folder, its inputs and the doc's manifest in a fresh directory
    manifest, commands = walkthrough()
    handler = tiny.HANDLER.replace('"tiny_score"', '"my_score"')
    tiny.write_package(
        tmp_path / "my_models",
        "my_model",
        handler=handler,
        toml=tiny.declaration("my_model", tiny.analysis("my_score")),
    )
    (tmp_path / "my_inputs").mkdir()
    (tmp_path / "my_inputs" / "a.json").write_text("[1, 2, 3, 4]", encoding="utf-8")
    (tmp_path / "my_jobs.jsonl").write_text("\n".join(manifest) + "\n", encoding="utf-8")
    # When the doc's commands run in one bash shell, with no FLEET_* or emulator variables of the test
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "LANG": "C.UTF-8",
    }
    process = subprocess.Popen(
        ["bash", "-c", _script(commands)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=WALKTHROUGH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
    finally:
        stack.down(work_dir=tmp_path / ".devstack")  # a no-op when the walkthrough stopped it
    print(out)
    worker_log = tmp_path / "worker.log"
    # Then every command ran and exited 0, each with the output the doc describes
    assert process.returncode == 0, (out, worker_log.read_text() if worker_log.exists() else "")
    outputs = re.split(rf"^{re.escape(MARK)}\d+\n", out, flags=re.MULTILINE)[1:]
    assert len(outputs) == len(commands)
    for command, output in zip(commands, outputs, strict=True):
        EXPECTED[command](output, tmp_path)
    assert '"job succeeded"' in worker_log.read_text()
