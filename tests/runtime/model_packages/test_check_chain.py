"""``fleet models check`` and ``fleet models parity`` on a ``needs`` chain made in the test: the upstream
package runs first, the fan-out package's preprocess gets its real answers in ``params["needs"]``, its
items go through buckets, its postprocess gets the context, and the printed line is the worker's answer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import shaped

FLEET = Path(sys.executable).parent / "fleet"


def fleet(*args: str | Path) -> tuple[int, list[dict[str, Any]], str]:
    result = subprocess.run(
        [str(FLEET), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, lines, result.stderr


#: The reader's answers for the reference pages (shaped.PAGES): each detected box, its crop's width
#: (the pad of its bucket undone), the bucket width the model saw, and its ink (8 rows x width).
PAGE0_LINES = [
    {"box": [4, 4, 20, 12], "width": 16, "padded": 16, "ink": 128.0},
    {"box": [10, 20, 40, 28], "width": 30, "padded": 32, "ink": 240.0},
]
PAGE1_LINES = [
    {"box": [2, 2, 90, 10], "width": 88, "padded": 88, "ink": 704.0},
    {"box": [30, 16, 46, 24], "width": 16, "padded": 16, "ink": 128.0},
    {"box": [50, 16, 55, 24], "width": 5, "padded": 16, "ink": 40.0},
]


def test_check_runs_a_needs_chain_as_the_worker_and_prints_the_chained_answer(tmp_path: Path) -> None:
    # Given the detector and the reader (whose analysis needs the detector's regions) in one folder
    _, reader = shaped.write_chain(tmp_path / "models")
    # When the reader alone is checked
    code, lines, stderr = fleet("models", "check", reader)
    # Then its upstream ran first from the same folder and each line is the reader's answer
    assert code == 0, stderr
    assert [line["model"] for line in lines] == ["reader", "reader"]
    assert lines[0]["outputs"] == {"text": {"lines": PAGE0_LINES}}
    assert lines[1]["outputs"] == {"text": {"lines": PAGE1_LINES}}
    # and the whole folder answers each package's own analyses (the detector's context-borne boxes)
    code, lines, stderr = fleet("models", "check", tmp_path / "models")
    assert code == 0, stderr
    by_model = {(line["model"], Path(line["input"]).name): line["outputs"] for line in lines}
    regions = by_model[("detector", "page1.json")]["regions"]
    assert [r["box"] for r in regions["boxes"]] == [line["box"] for line in PAGE1_LINES]
    assert regions["size"] == [96, 32] and by_model[("reader", "page1.json")]["text"]["lines"] == PAGE1_LINES


def test_check_finds_the_upstream_packages_in_models_and_names_a_missing_one(tmp_path: Path) -> None:
    shaped.write_detector(tmp_path / "models")
    reader = shaped.write_reader(tmp_path / "elsewhere")
    code, lines, stderr = fleet("models", "check", reader, "--models", tmp_path / "models")
    assert code == 0, stderr
    assert [line["outputs"]["text"]["lines"] for line in lines] == [PAGE0_LINES, PAGE1_LINES]
    # without --models the reader's own folder has no detector: refused, naming the need
    code, _, stderr = fleet("models", "check", reader)
    assert code == 1 and "analysis 'text' needs 'regions', which no package offers" in stderr


def test_check_answers_too_many_items_with_its_code(tmp_path: Path) -> None:
    shaped.write_detector(tmp_path / "models")
    reader = shaped.write_reader(
        tmp_path / "models", toml=shaped.READER_TOML.replace("max_items = 8", "max_items = 2")
    )
    code, lines, _ = fleet("models", "check", reader)
    assert code == 1
    assert lines[0]["outputs"] == {"text": {"lines": PAGE0_LINES}}  # two regions: within the limit
    assert lines[1]["error"] == {
        "code": "TOO_MANY_ITEMS",
        "message": "reader: preprocess returned 3 items for one page; [fan_out] max_items is 2",
    }


def test_parity_runs_the_gate_on_cpu_for_each_package_of_a_chain(tmp_path: Path) -> None:
    shaped.write_chain(tmp_path / "models")
    shutil.rmtree(tmp_path / "models" / "detector" / "reference")  # the reader's pages come through
    (tmp_path / "models" / "detector" / "reference").mkdir()
    (tmp_path / "models" / "detector" / "reference" / "p.json").write_text(json.dumps(shaped.PAGES[0]))
    code, lines, stderr = fleet("models", "parity", tmp_path / "models")
    assert code == 0, stderr
    by_model = {line["model"]: line for line in lines}
    assert by_model["detector"]["precision"] == "FP16" and by_model["reader"]["precision"] == "FP16"
    reader_fp16 = by_model["reader"]["measured"][0]
    assert reader_fp16["answers"]["text"]["lines"]["compared"] == 5  # both reference pages' crops
    assert by_model["detector"]["measured"][0]["answers"]["regions"]["boxes"]["compared"] == 2
