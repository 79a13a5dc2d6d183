"""The drawing analyzer's handler: its preprocessing and its answers, as the worker calls them.

``preprocess`` decodes and letterboxes image bytes (``preprocessing``), ``preprocess_page`` letterboxes a
page the worker decoded (``worker.runtime.documents``); ``postprocess`` answers ``classify``/``embed``
(``answers``, the contract in docs/contracts.md) with the abstention policy next to the ONNX
(``abstention.json``, written by scripts/train_model.py).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from worker.runtime import documents

from . import abstention, answers, model_spec, preprocessing


@functools.cache
def _policy() -> abstention.Policy:
    return abstention.load_policy()


def preprocess(data: bytes, params: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """Image bytes -> ``{"IMAGE": [1, 192, 192] FP32}``; bad input raises the worker's typed errors."""
    return {model_spec.INPUT.name: preprocessing.preprocess_bytes(data)}


def preprocess_page(page: documents.Page, params: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """A page the worker decoded (at 192 px) -> ``{"IMAGE": [1, 192, 192] FP32}``, the same letterbox."""
    return {model_spec.INPUT.name: preprocessing.image_to_tensor(page.image)}


def postprocess(outputs: dict[str, np.ndarray[Any, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """``{"classify": {...}, "embed": {...}}``, limited to ``params["analyses"]`` (both when absent)."""
    analyses = tuple(params.get("analyses") or model_spec.ANALYSES)
    return answers.answer(
        outputs[model_spec.OUTPUT_PROBS.name], outputs[model_spec.OUTPUT_EMBEDDING.name], analyses, _policy()
    )
