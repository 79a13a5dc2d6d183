"""The drawing model's answer for one image: a part class, ``not_a_drawing`` or ``unsure``.

Pure functions over the two tensors Triton returns (``CLASS_PROBS`` over ``model_spec.OUTPUT_CLASSES``,
``EMBEDDING``) and a :class:`Policy` that training writes as data next to the model
(``abstention.json``: temperature, thresholds, class prototypes). Nothing here does I/O except
:func:`load_policy`.

The decision, in order (the first rule that fires decides, and the result names it):

1. ``not_a_drawing`` when the calibrated probability of the ``not_a_drawing`` class is at least
   ``reject_threshold`` (``decided_by = "not_a_drawing_probability"``).
2. ``unsure`` when the embedding's cosine similarity to the nearest class prototype is below
   ``prototype_threshold`` - an input unlike every training drawing (``"prototype_similarity"``); only
   when the policy carries prototypes.
3. ``unsure`` when the calibrated probability of the best part class is below ``unsure_threshold``
   (``"class_probability"``).
4. Otherwise the best part class, with its calibrated probability as the confidence.

Calibration is temperature scaling of the served softmax: ``softmax(log(p) / T)`` equals
``softmax(logits / T)`` because the log of a softmax is the logits up to a constant.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from . import model_spec

FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]

#: ``decided_by`` values, one per rule above.
BY_NOT_A_DRAWING: Final = "not_a_drawing_probability"
BY_PROTOTYPE: Final = "prototype_similarity"
BY_CLASS: Final = "class_probability"
DECIDED_BY: Final = (BY_NOT_A_DRAWING, BY_PROTOTYPE, BY_CLASS)
#: Probabilities are clipped here before the log so an underflowed 0.0 stays finite.
_MIN_PROB: Final = 1e-30
#: The policy's file name in the package, and the policy next to this module (training writes it there,
#: beside the ONNX it was fitted to).
POLICY_FILE: Final = "abstention.json"
PACKAGED_POLICY: Final = model_spec.PACKAGE_DIR / POLICY_FILE


@dataclass(frozen=True, slots=True)
class Policy:
    """Decision data for one trained model (``abstention.json``)."""

    temperature: float
    reject_threshold: float
    unsure_threshold: float
    prototype_threshold: float | None = None
    prototypes: tuple[tuple[float, ...], ...] | None = None
    onnx_sha256: str = ""

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a positive number, not {self.temperature!r}")
        for name in ("reject_threshold", "unsure_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if (self.prototypes is None) != (self.prototype_threshold is None):
            raise ValueError("prototypes and prototype_threshold come together")
        if self.prototypes is not None and (
            len(self.prototypes) != len(model_spec.CLASS_NAMES)
            or any(len(p) != model_spec.EMBEDDING_DIM for p in self.prototypes)
        ):
            raise ValueError("prototypes must be one EMBEDDING_DIM vector per part class")

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Policy:
        """The policy from its JSON document (unknown keys, e.g. provenance, are ignored)."""
        prototypes = document.get("prototypes")
        threshold = document.get("prototype_threshold")
        return cls(
            temperature=float(document["temperature"]),
            reject_threshold=float(document["reject_threshold"]),
            unsure_threshold=float(document["unsure_threshold"]),
            prototype_threshold=None if threshold is None else float(threshold),
            prototypes=None if prototypes is None else tuple(tuple(float(v) for v in p) for p in prototypes),
            onnx_sha256=str(document.get("onnx_sha256", "")),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON document :meth:`from_json` reads."""
        return {
            "temperature": self.temperature,
            "reject_threshold": self.reject_threshold,
            "unsure_threshold": self.unsure_threshold,
            "prototype_threshold": self.prototype_threshold,
            "prototypes": None if self.prototypes is None else [list(p) for p in self.prototypes],
            "onnx_sha256": self.onnx_sha256,
        }


def load_policy(path: Path = PACKAGED_POLICY) -> Policy:
    """Read a policy file (default: the one in this package)."""
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return Policy.from_json(document)


@dataclass(frozen=True, slots=True)
class Decision:
    """One image's answer: the label, its calibrated confidence, and the rule and score that decided."""

    label: str
    confidence: float
    decided_by: str
    score: float
    threshold: float
    scores: dict[str, float]


def calibrate(probs: FloatArray, temperature: float) -> npt.NDArray[np.float64]:
    """Temperature-scaled probabilities over the last axis (rows of ``probs`` are softmax outputs)."""
    logits = np.log(np.clip(probs.astype(np.float64), _MIN_PROB, None)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    result: npt.NDArray[np.float64] = exp / exp.sum(axis=-1, keepdims=True)
    return result


def prototype_similarity(embeddings: FloatArray, policy: Policy) -> npt.NDArray[np.float64]:
    """Cosine similarity of each (L2-normalised) embedding to its nearest class prototype."""
    if policy.prototypes is None:
        raise ValueError("policy has no prototypes")
    protos = np.asarray(policy.prototypes, dtype=np.float64)
    sims: npt.NDArray[np.float64] = (np.atleast_2d(embeddings).astype(np.float64) @ protos.T).max(axis=-1)
    return sims


def decide(probs: FloatArray, embedding: FloatArray, policy: Policy) -> Decision:
    """The answer for one image from its ``CLASS_PROBS`` row and ``EMBEDDING`` row."""
    if probs.shape != (len(model_spec.OUTPUT_CLASSES),):
        raise ValueError(f"expected {len(model_spec.OUTPUT_CLASSES)} class probabilities, got {probs.shape}")
    calibrated = calibrate(probs, policy.temperature)
    scores = {name: float(v) for name, v in zip(model_spec.OUTPUT_CLASSES, calibrated, strict=True)}
    p_not = scores[model_spec.NOT_A_DRAWING]
    if p_not >= policy.reject_threshold:
        return Decision(
            model_spec.NOT_A_DRAWING, p_not, BY_NOT_A_DRAWING, p_not, policy.reject_threshold, scores
        )
    part = int(np.argmax(calibrated[: len(model_spec.CLASS_NAMES)]))
    confidence = float(calibrated[part])
    if policy.prototype_threshold is not None:
        similarity = float(prototype_similarity(embedding, policy)[0])
        if similarity < policy.prototype_threshold:
            return Decision(
                model_spec.UNSURE, confidence, BY_PROTOTYPE, similarity, policy.prototype_threshold, scores
            )
    label = model_spec.CLASS_NAMES[part] if confidence >= policy.unsure_threshold else model_spec.UNSURE
    return Decision(label, confidence, BY_CLASS, confidence, policy.unsure_threshold, scores)


def decide_batch(probs: FloatArray, embeddings: FloatArray, policy: Policy) -> list[Decision]:
    """:func:`decide` for each row of a batch (evaluation and tests)."""
    return [decide(p, e, policy) for p, e in zip(probs, embeddings, strict=True)]
