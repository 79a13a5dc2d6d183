"""The precision gate: an engine's precision is the fastest one whose outputs stay within the tolerance.

DeNA measured TensorRT FP16 changing one model's outputs from the 1st-2nd decimal (rejected) and FP32 from
the 4th-5th (accepted): precision is decided per model, by measurement, never by a default. When an
engine is built, each candidate precision the package declares (fastest first) is run on the package's
reference inputs and compared with the ONNX reference outputs; the first within ``max_abs_error`` on
every output wins. The decision, with every candidate's measured error, goes into the engine's
provenance and the logs. No candidate within tolerance is an error: the boot fails loudly rather than
serving wrong numbers.

The decision is pure (``choose_precision``); where the candidate outputs come from is the caller's: on a
GPU, TensorRT engines built with ``trtexec``; on CPU, in the tests, onnxruntime running an FP16-converted
graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Outputs = Mapping[str, np.ndarray[Any, Any]]


class NoPrecisionWithinTolerance(Exception):
    """Every candidate precision's outputs differ from the reference by more than the tolerance."""


@dataclass(frozen=True)
class CandidateError:
    """How far one precision's outputs were from the reference: the worst absolute error per output."""

    precision: str
    max_abs_error: dict[str, float]

    @property
    def worst(self) -> float:
        return max(self.max_abs_error.values(), default=0.0)


@dataclass(frozen=True)
class PrecisionDecision:
    """The chosen precision and the evidence, as recorded in the engine's provenance."""

    chosen: str
    tolerance: float
    measured: tuple[CandidateError, ...]
    rejected: tuple[str, ...] = field(default=())

    def provenance(self) -> dict[str, Any]:
        """JSON-able record for the engine cache and the boot log."""
        return {
            "precision": self.chosen,
            "tolerance_max_abs_error": self.tolerance,
            "rejected": list(self.rejected),
            "measured": [
                {"precision": c.precision, "max_abs_error": c.max_abs_error, "worst": c.worst}
                for c in self.measured
            ],
        }


def max_abs_errors(reference: Sequence[Outputs], candidate: Sequence[Outputs]) -> dict[str, float]:
    """Per output name, the largest absolute difference over every reference input."""
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


def choose_precision(
    precisions: Sequence[str],
    *,
    reference: Sequence[Outputs],
    run: Callable[[str], Sequence[Outputs]],
    tolerance: float,
) -> PrecisionDecision:
    """Try ``precisions`` in order (fastest first); the first within ``tolerance`` on every output wins.

    ``run(precision)`` returns that precision's outputs on the same reference inputs. Candidates after
    the winner are not run (building an engine costs minutes on a GPU).
    """
    measured: list[CandidateError] = []
    rejected: list[str] = []
    for precision in precisions:
        candidate = CandidateError(precision, max_abs_errors(reference, run(precision)))
        measured.append(candidate)
        if candidate.worst <= tolerance:
            return PrecisionDecision(precision, tolerance, tuple(measured), tuple(rejected))
        rejected.append(precision)
    summary = ", ".join(f"{c.precision} {c.worst:.3g}" for c in measured)
    raise NoPrecisionWithinTolerance(
        f"no precision within max_abs_error {tolerance:g} of the ONNX reference (measured: {summary})"
    )
