"""Small drawings are served as drawings: the model card's small-sheet figures, from the committed ONNX.

Before the small training sheets (docs/model-card.md, Limits) a 320-px-wide drawing was answered
``not_a_drawing`` 92 % of the time: a confident wrong answer that cannot be told from a right one. Here the
card's small-sheet set (``worker.dev.model_card.small_sheet_figures``: the same 48 drawings and 44 negatives
at 877, 640, 500, 438 and 320 px across) is regenerated and run through the committed ONNX with onnxruntime
and the committed policy, the figures are checked against ``model.metrics.json`` and the card's table, and
the bars below are asserted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.dev import model_card
from worker.models.drawing_analyzer import abstention, model_spec

ROOT = Path(__file__).resolve().parents[2]
ONNX = model_spec.PACKAGE_DIR / "model.onnx"
METRICS = model_spec.PACKAGE_DIR / "model.metrics.json"
CARD = ROOT / "docs" / "model-card.md"
#: Training's onnxruntime may not be this one: a decision may flip for an item sitting on a threshold.
ONE_ITEM = 1.0 / model_card.SMALL_SHEET_NEGATIVES + 1e-9
#: The bars, at every size down to 320 px. Drawings: the card's accuracy target (>= 0.95, the same bar as
#: at 877 px), and at most 2 of 48 answered not_a_drawing - one item per set, as the card's other figures
#: are allowed, plus one; before the small training sheets it was 44 of 48 at 320 px. Negatives: at most
#: 2 of 44 answered with a part class (the committed model before had 1 of 44 at 877 px), so the model did
#: not learn "small means drawing".
MIN_CORRECT = 0.95
MAX_NOT_A_DRAWING = 2 / model_card.SMALL_SHEET_DRAWINGS + 1e-9
MAX_NEGATIVES_AS_PARTS = 2 / model_card.SMALL_SHEET_NEGATIVES + 1e-9


@pytest.fixture(scope="module")
def measured() -> dict[str, dict[str, dict[str, float]]]:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])
    names = [spec.name for spec in model_spec.OUTPUTS]

    def infer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, embeddings = session.run(names, {model_spec.INPUT.name: x})
        return probs, embeddings

    result = model_card.small_sheet_figures(abstention.load_policy(), infer)
    print(json.dumps(result, indent=1))
    return result


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    small: dict[str, Any] = json.loads(METRICS.read_text())["abstention"]["small_sheets"]
    return small


def test_the_small_sheet_figures_reproduce_from_the_committed_onnx(
    measured: dict[str, dict[str, dict[str, float]]], committed: dict[str, Any]
) -> None:
    assert committed["seed"] == model_card.SMALL_SHEET_SEED
    assert (
        list(measured) == list(committed["by_size"]) == [f"{w}x{h}" for w, h in model_card.SMALL_SHEET_SIZES]
    )
    for size, row in measured.items():
        for group, fractions in row.items():
            for answer, value in fractions.items():
                expected = committed["by_size"][size][group][answer]
                assert value == pytest.approx(expected, abs=ONE_ITEM), (size, group, answer)


def test_the_card_quotes_the_committed_small_sheet_figures(committed: dict[str, Any]) -> None:
    card = CARD.read_text(encoding="utf-8").splitlines()
    missing = [line for line in model_card.small_sheet_table(committed["by_size"]) if line not in card]
    assert not missing, missing


def test_small_drawings_are_not_answered_not_a_drawing(
    measured: dict[str, dict[str, dict[str, float]]],
) -> None:
    # Given the same drawings rendered from 877 down to 320 px across
    for size, row in measured.items():
        drawn = row["drawings"]
        # Then each size keeps the card's accuracy and almost none is called "not a drawing"
        assert drawn["not_a_drawing"] <= MAX_NOT_A_DRAWING, (size, drawn)
        assert drawn["correct"] >= MIN_CORRECT, (size, drawn)
    assert measured["320x226"]["drawings"]["not_a_drawing"] <= MAX_NOT_A_DRAWING


def test_small_negatives_are_still_not_given_a_part_class(
    measured: dict[str, dict[str, dict[str, float]]],
) -> None:
    for size, row in measured.items():
        assert row["negatives"]["part_class"] <= MAX_NEGATIVES_AS_PARTS, (size, row["negatives"])
