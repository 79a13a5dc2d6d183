"""The precision gate: an engine's precision is the fastest one whose results agree with the ONNX reference.

DeNA measured TensorRT FP16 changing one model's outputs from the 1st-2nd decimal (rejected) and FP32 from
the 4th-5th (accepted): precision is decided per model, by measurement, never by a default. When an
engine is built, each candidate precision the package declares (fastest first) is run through the
package's step on its reference inputs (fed as the worker feeds it: the upstream packages' reference
answers in ``needs``, its items, its context; ``chain``) and compared with the ONNX (FP32) reference
by the package's rule:

- ``[parity] max_abs_error``: every raw output within that absolute error (the default rule);
- ``[parity.answers.<analysis>]``: the post-processed answers agree field by field (``answers``): an
  FP16 recogniser that moves a probability but no character passes, a detector that loses a box fails.

The first candidate that passes wins. The decision, with every candidate's measured disagreements and
raw max abs error, goes into the engine's provenance and the logs. No candidate passing is an error:
the boot fails loudly rather than serving wrong answers.

The decision is pure (``choose_precision``); where the candidate results come from is the caller's: on a
GPU, TensorRT engines built and run with ``trtexec`` (``engine_build``); on CPU, onnxruntime running an
FP16-converted graph (``chain.gate_on_cpu``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from worker.runtime.model_packages import answers as answer_rules
from worker.runtime.model_packages.answers import AnswerRules

Outputs = Mapping[str, np.ndarray[Any, Any]]
#: Precisions with a CPU stand-in for the gate without a GPU: the graph itself, its FP16 conversion.
CPU_PRECISIONS: Final = ("FP16", "FP32")


class NoPrecisionWithinTolerance(Exception):
    """Every candidate precision's results disagree with the reference beyond the package's rule."""


@dataclass(frozen=True)
class StageRun:
    """What one precision gave on the reference inputs: each item's raw outputs, in order, and each
    reference input's answers (keyed by analysis; empty when the rule judges raw tensors only)."""

    outputs: Sequence[Outputs]
    answers: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class CandidateMeasure:
    """One precision measured: the worst absolute error per raw output and, under answer rules, what
    each analysis's fields disagreed on."""

    precision: str
    max_abs_error: dict[str, float]
    accepted: bool
    answers: dict[str, dict[str, dict[str, Any]]] | None = None
    disagreements: int = 0

    @property
    def worst(self) -> float:
        return max(self.max_abs_error.values(), default=0.0)

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "precision": self.precision,
            "accepted": self.accepted,
            "max_abs_error": self.max_abs_error,
            "worst": self.worst,
        }
        if self.answers is not None:
            out["disagreements"] = self.disagreements
            out["answers"] = self.answers
        return out

    def summary(self) -> str:
        if self.answers is None:
            return f"{self.precision} {self.worst:.3g}"
        where = [
            f"{analysis}.{name}"
            for analysis, fields in self.answers.items()
            for name, measure in fields.items()
            if measure["disagreements"]
        ]
        return f"{self.precision} {self.disagreements} disagreements ({', '.join(where) or 'none'})"


@dataclass(frozen=True)
class PrecisionDecision:
    """The chosen precision and the evidence, as recorded in the engine's provenance."""

    chosen: str
    tolerance: float | None
    measured: tuple[CandidateMeasure, ...]
    rejected: tuple[str, ...] = field(default=())
    rules: AnswerRules | None = None
    notes: tuple[str, ...] = ()

    def provenance(self) -> dict[str, Any]:
        """JSON-able record for the engine cache and the boot log."""
        record: dict[str, Any] = {
            "precision": self.chosen,
            "rule": "max_abs_error" if self.rules is None else "answers",
            "tolerance_max_abs_error": self.tolerance,
            "rejected": list(self.rejected),
            "measured": [c.record() for c in self.measured],
        }
        if self.rules is not None:
            record["answer_rules"] = self.rules.describe()
        if self.notes:
            record["notes"] = list(self.notes)
        return record


def max_abs_errors(reference: Sequence[Outputs], candidate: Sequence[Outputs]) -> dict[str, float]:
    """Per output name, the largest absolute difference over every reference row."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(candidate)} candidate results for {len(reference)} reference inputs")
    worst: dict[str, float] = {}
    for ref, got in zip(reference, candidate, strict=True):
        for name, expected in ref.items():
            if name not in got:
                raise ValueError(f"candidate has no output {name!r}")
            actual = np.asarray(got[name], dtype=np.float64)
            wanted = np.asarray(expected, dtype=np.float64)
            if actual.shape != wanted.shape:
                raise ValueError(f"output {name!r} has shape {actual.shape}, reference {wanted.shape}")
            error = float(np.max(np.abs(actual - wanted))) if wanted.size else 0.0
            if not np.isfinite(error):
                error = float("inf")
            worst[name] = max(worst.get(name, 0.0), error)
    return worst


def measure(
    precision: str,
    reference: StageRun,
    candidate: StageRun,
    *,
    tolerance: float | None = None,
    rules: AnswerRules | None = None,
) -> CandidateMeasure:
    """One candidate against the reference by the package's rule (exactly one of ``tolerance``/``rules``)."""
    raw = max_abs_errors(reference.outputs, candidate.outputs)
    if tolerance is not None and rules is None:
        return CandidateMeasure(precision, raw, max(raw.values(), default=0.0) <= tolerance)
    if rules is not None and tolerance is None:
        judged = answer_rules.judge(rules, reference.answers, candidate.answers)
        count = answer_rules.disagreements(judged)
        records = {a: {name: m.record() for name, m in fields.items()} for a, fields in judged.items()}
        return CandidateMeasure(precision, raw, count == 0, records, count)
    raise ValueError("judge by max_abs_error or by answer rules: exactly one")


def choose_precision(
    precisions: Sequence[str],
    *,
    reference: StageRun,
    run: Callable[[str], StageRun],
    tolerance: float | None = None,
    rules: AnswerRules | None = None,
    notes: Sequence[str] = (),
) -> PrecisionDecision:
    """Try ``precisions`` in order (fastest first); the first the rule accepts wins.

    ``run(precision)`` returns that precision's results on the same reference inputs. Candidates after
    the winner are not run (building an engine costs minutes on a GPU).
    """
    measured: list[CandidateMeasure] = []
    rejected: list[str] = []
    for precision in precisions:
        candidate = measure(precision, reference, run(precision), tolerance=tolerance, rules=rules)
        measured.append(candidate)
        if candidate.accepted:
            return PrecisionDecision(
                precision, tolerance, tuple(measured), tuple(rejected), rules, tuple(notes)
            )
        rejected.append(precision)
    summary = ", ".join(c.summary() for c in measured)
    if rules is None:
        raise NoPrecisionWithinTolerance(
            f"no precision within max_abs_error {tolerance:g} of the ONNX reference (measured: {summary})"
        )
    raise NoPrecisionWithinTolerance(
        f"no precision gives the ONNX reference's answers by [parity.answers] (measured: {summary})"
    )
