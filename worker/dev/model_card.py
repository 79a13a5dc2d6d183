"""The model card's abstention figures, computed one way by training and by the test.

``scripts/train_model.py`` runs the exported ONNX on the evaluation sets and writes :func:`figures` into
``model.metrics.json``; ``tests/model/test_abstention_card.py`` regenerates the same sets, runs them
through the real tritonserver and checks that :func:`figures` gives the committed numbers, and that
docs/model-card.md quotes them. Pure numpy over the two served tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from worker.dev import drawings
from worker.models.drawing_analyzer import abstention, model_spec, preprocessing

Array = npt.NDArray[Any]
#: Bins of the expected calibration error (equal width over [0, 1]).
ECE_BINS: Final = 15
#: Where the evaluation sets come from (drawings: 40 per class; negatives: 24 per kind, every kind,
#: the unseen ones included). The drawings are tests/model/test_triton_model.py's set.
EVAL_SEED: Final = 3
EVAL_DRAWINGS: Final = 240
EVAL_NEGATIVES: Final = 264
EVAL_SIZE: Final = (877, 620)
#: The small-sheet measurement (docs/model-card.md, Limits): the same 48 drawings (8 per class) and 44
#: negatives (4 per kind, all 11 kinds) rendered at each sheet size, so the sizes differ only in
#: resolution. Seed 6: 3 is the evaluation set, 4 the INT8 calibration set, 5 the calibration split.
#: 500 px is a width training never used; the others are training's small sizes plus the evaluation's.
SMALL_SHEET_SEED: Final = 6
SMALL_SHEET_SIZES: Final = ((877, 620), (640, 452), (500, 354), (438, 310), (320, 226))
SMALL_SHEET_DRAWINGS: Final = 48
SMALL_SHEET_NEGATIVES: Final = 44
#: The model as a function: preprocessed float32 tensors ``(n, 1, 192, 192)`` -> (CLASS_PROBS, EMBEDDING).
Infer = Callable[[npt.NDArray[np.float32]], tuple[Array, Array]]


def expected_calibration_error(confidence: Array, correct: Array, *, bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence|, weighted by bin share."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += float(mask.mean()) * abs(float(correct[mask].mean()) - float(confidence[mask].mean()))
    return total


def auroc(positive: Array, negative: Array) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def closed_set_ece(probs: Array, targets: Array, temperature: float = 1.0) -> float:
    """ECE of the 7-way classifier (negatives' target is ``not_a_drawing``), optionally temperature-scaled."""
    calibrated = abstention.calibrate(probs, temperature)
    return expected_calibration_error(calibrated.max(axis=1), calibrated.argmax(axis=1) == targets)


def fit_temperature(probs: Array, targets: Array) -> float:
    """The temperature minimising the negative log-likelihood (log-spaced grid 0.25-8, then refined)."""

    def nll(t: float) -> float:
        p = abstention.calibrate(probs, t)[np.arange(len(targets)), targets]
        return float(-np.log(np.clip(p, 1e-300, None)).mean())

    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 121))
    best = float(grid[int(np.argmin([nll(float(t)) for t in grid]))])
    fine = np.linspace(best / 1.03, best * 1.03, 41)
    return round(float(fine[int(np.argmin([nll(float(t)) for t in fine]))]), 4)


def _rate(values: Sequence[bool]) -> float:
    return round(float(np.mean(values)), 4) if len(values) else 0.0


@dataclass(frozen=True)
class Served:
    """What the model served for one evaluation set: drawings with class indices, negatives with kinds."""

    drawing_probs: Array
    drawing_embeddings: Array
    drawing_labels: Array
    negative_probs: Array
    negative_embeddings: Array
    negative_kinds: Sequence[str]


def figures(policy: abstention.Policy, served: Served) -> dict[str, Any]:
    """The card's figures for one evaluation set (rounded to 4 places, so a rerun compares exactly)."""
    drawing_probs, drawing_embeddings, drawing_labels = (
        served.drawing_probs,
        served.drawing_embeddings,
        served.drawing_labels,
    )
    negative_probs, negative_embeddings, negative_kinds = (
        served.negative_probs,
        served.negative_embeddings,
        served.negative_kinds,
    )
    drawn = abstention.decide_batch(drawing_probs, drawing_embeddings, policy)
    rejected = abstention.decide_batch(negative_probs, negative_embeddings, policy)
    names = [model_spec.CLASS_NAMES[int(y)] for y in drawing_labels]
    accepted = [d for d in drawn if d.label in model_spec.CLASS_NAMES]
    kinds = list(dict.fromkeys(negative_kinds))
    p_not_drawings = abstention.calibrate(drawing_probs, policy.temperature)[:, -1]
    p_not_negatives = abstention.calibrate(negative_probs, policy.temperature)[:, -1]
    targets = np.concatenate([drawing_labels, np.full(len(negative_probs), model_spec.NUM_CLASSES - 1)])
    probs = np.concatenate([drawing_probs, negative_probs])
    result: dict[str, Any] = {
        "drawings": len(drawn),
        "negatives": len(rejected),
        "accuracy_on_drawings": _rate([d.label == n for d, n in zip(drawn, names, strict=True)]),
        "accuracy_on_accepted_drawings": _rate(
            [d.label == n for d, n in zip(drawn, names, strict=True) if d.label in model_spec.CLASS_NAMES]
        ),
        "drawings_accepted": _rate([True] * len(accepted) + [False] * (len(drawn) - len(accepted))),
        "false_rejection_rate": _rate([d.label == model_spec.NOT_A_DRAWING for d in drawn]),
        "drawings_unsure": _rate([d.label == model_spec.UNSURE for d in drawn]),
        "detection_rate": _rate([d.label not in model_spec.CLASS_NAMES for d in rejected]),
        "detection_by_kind": {
            kind: _rate(
                [
                    d.label not in model_spec.CLASS_NAMES
                    for d, k in zip(rejected, negative_kinds, strict=True)
                    if k == kind
                ]
            )
            for kind in kinds
        },
        "not_a_drawing_by_kind": {
            kind: _rate(
                [
                    d.label == model_spec.NOT_A_DRAWING
                    for d, k in zip(rejected, negative_kinds, strict=True)
                    if k == kind
                ]
            )
            for kind in kinds
        },
        "auroc_not_a_drawing_probability": round(auroc(p_not_negatives, p_not_drawings), 4),
        "auroc_max_part_probability": round(
            auroc(
                -abstention.calibrate(negative_probs, policy.temperature)[:, :-1].max(axis=1),
                -abstention.calibrate(drawing_probs, policy.temperature)[:, :-1].max(axis=1),
            ),
            4,
        ),
        "ece_before_calibration": round(closed_set_ece(probs, targets), 4),
        "ece_after_calibration": round(closed_set_ece(probs, targets, policy.temperature), 4),
    }
    if policy.prototypes is not None:
        result["auroc_prototype_similarity"] = round(
            auroc(
                -abstention.prototype_similarity(negative_embeddings, policy),
                -abstention.prototype_similarity(drawing_embeddings, policy),
            ),
            4,
        )
    return result


#: The card's table rows: (figure key, what the row says). ``card_table`` renders them; the test checks
#: that docs/model-card.md holds exactly these lines for the committed figures.
_ROWS: Final = (
    (
        "accuracy_on_drawings",
        "accuracy on drawings (right part class; unsure and not_a_drawing count as wrong)",
    ),
    ("accuracy_on_accepted_drawings", "accuracy on the drawings answered with a part class"),
    ("false_rejection_rate", "false rejection rate (drawings answered not_a_drawing)"),
    ("drawings_unsure", "drawings answered unsure"),
    ("detection_rate", "negatives answered not_a_drawing or unsure (all kinds)"),
    ("auroc_not_a_drawing_probability", "AUROC, calibrated P(not_a_drawing), negatives vs drawings"),
    ("auroc_max_part_probability", "AUROC, 1 - best calibrated part-class probability"),
    ("auroc_prototype_similarity", "AUROC, 1 - cosine similarity to the nearest class prototype"),
    ("ece_before_calibration", "expected calibration error, 7-way, before temperature scaling"),
    ("ece_after_calibration", "expected calibration error, 7-way, after temperature scaling"),
)


def card_table(result: dict[str, Any], unseen: Sequence[str]) -> list[str]:
    """Markdown lines of the card's abstention table for :func:`figures` output ``result``."""
    lines = ["| figure | value |", "|--------|-------|"]
    lines += [f"| {text} | {result[key]:.4f} |" for key, text in _ROWS if key in result]
    for kind, rate in result["detection_by_kind"].items():
        note = " (kind unseen in training)" if kind in unseen else ""
        rejected = result["not_a_drawing_by_kind"][kind]
        lines.append(f"| detection of `{kind}`{note} | {rate:.4f} (not_a_drawing {rejected:.4f}) |")
    return lines


def small_sheet_inputs(size: tuple[int, int]) -> tuple[Array, Array, Array, list[str]]:
    """The small-sheet set at one size, preprocessed: drawings, their class indices, negatives, kinds."""
    drawn = list(drawings.dataset(SMALL_SHEET_DRAWINGS, seed=SMALL_SHEET_SEED, size=size, fmt="mixed"))
    negatives = list(
        drawings.negative_dataset(SMALL_SHEET_NEGATIVES, seed=SMALL_SHEET_SEED, size=size, fmt="mixed")
    )
    return (
        np.stack([preprocessing.preprocess_bytes(data) for data, _ in drawn]),
        np.array([model_spec.CLASS_NAMES.index(label) for _, label in drawn]),
        np.stack([preprocessing.preprocess_bytes(data) for data, _ in negatives]),
        [kind for _, kind in negatives],
    )


def answer_fractions(policy: abstention.Policy, served: Served) -> dict[str, dict[str, float]]:
    """What share of drawings and of negatives gets each kind of answer (rounded to 4 places)."""
    drawn = abstention.decide_batch(served.drawing_probs, served.drawing_embeddings, policy)
    rejected = abstention.decide_batch(served.negative_probs, served.negative_embeddings, policy)
    names = [model_spec.CLASS_NAMES[int(y)] for y in served.drawing_labels]
    parts = model_spec.CLASS_NAMES
    return {
        "drawings": {
            "correct": _rate([d.label == n for d, n in zip(drawn, names, strict=True)]),
            "wrong_class": _rate(
                [d.label in parts and d.label != n for d, n in zip(drawn, names, strict=True)]
            ),
            "unsure": _rate([d.label == model_spec.UNSURE for d in drawn]),
            "not_a_drawing": _rate([d.label == model_spec.NOT_A_DRAWING for d in drawn]),
        },
        "negatives": {
            "not_a_drawing": _rate([d.label == model_spec.NOT_A_DRAWING for d in rejected]),
            "unsure": _rate([d.label == model_spec.UNSURE for d in rejected]),
            "part_class": _rate([d.label in parts for d in rejected]),
        },
    }


def small_sheet_figures(policy: abstention.Policy, infer: Infer) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`answer_fractions` at every ``SMALL_SHEET_SIZES`` size, keyed ``"WIDTHxHEIGHT"``."""
    result = {}
    for width, height in SMALL_SHEET_SIZES:
        xd, yd, xn, kinds = small_sheet_inputs((width, height))
        pd, ed = infer(xd.astype(np.float32))
        pn, en = infer(xn.astype(np.float32))
        result[f"{width}x{height}"] = answer_fractions(policy, Served(pd, ed, yd, pn, en, kinds))
    return result


def small_sheet_table(result: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Markdown lines of the card's small-sheet table for :func:`small_sheet_figures` output ``result``."""
    lines = [
        "| sheet (px) | drawings correct | wrong class | unsure | not_a_drawing"
        " | negatives not_a_drawing | unsure | part class |",
        "|------|------|------|------|------|------|------|------|",
    ]
    for size, row in result.items():
        d, n = row["drawings"], row["negatives"]
        cells = [d["correct"], d["wrong_class"], d["unsure"], d["not_a_drawing"]]
        cells += [n["not_a_drawing"], n["unsure"], n["part_class"]]
        lines.append(f"| {size} | " + " | ".join(f"{v:.4f}" for v in cells) + " |")
    return lines
