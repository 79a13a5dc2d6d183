"""Percentiles as every report of the fleet quotes them: one definition, imported everywhere."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

#: The percentiles that the bench, the chaos soak and the demo print.
REPORTED: Final = (50, 95, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100] of ``values``; NaN for an empty sample."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def percentiles(values: Sequence[float], qs: Sequence[float] = REPORTED) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "p99": ...}`` by nearest rank; NaN for an empty sample."""
    ordered = sorted(values)
    return {f"p{q:g}": percentile(ordered, q) for q in qs}
