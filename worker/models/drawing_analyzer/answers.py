"""The drawing analyzer's outputs for one page: ``classify`` and ``embed`` (docs/contracts.md).

``classify`` answers a part class, ``not_a_drawing`` or ``unsure`` (``abstention``) with the calibrated
confidence, the calibrated ``scores`` of every output class, and the rule, score and threshold that
decided; ``embed`` is the L2-normalised embedding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from . import abstention

FloatArray = npt.NDArray[np.float32]


def answer(
    probs: FloatArray, embedding: FloatArray, analyses: tuple[str, ...], policy: abstention.Policy
) -> dict[str, Any]:
    """One page's outputs from its ``CLASS_PROBS`` and ``EMBEDDING`` rows, limited to ``analyses``."""
    outputs: dict[str, Any] = {}
    if "classify" in analyses:
        decision = abstention.decide(probs, embedding, policy)
        outputs["classify"] = {
            "label": decision.label,
            "confidence": round(decision.confidence, 6),
            "scores": {name: round(value, 6) for name, value in decision.scores.items()},
            "decision": {
                "by": decision.decided_by,
                "score": round(decision.score, 6),
                "threshold": decision.threshold,
            },
        }
    if "embed" in analyses:
        outputs["embed"] = {"embedding": np.round(embedding.astype(np.float64), 6).tolist()}
    return outputs
