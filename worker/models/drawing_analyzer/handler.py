"""The drawing analyzer's handler: the worker's own preprocessing and abstention, as a model package.

``preprocess`` is ``worker.runtime.preprocess`` (decode, letterbox, the security bounds), and
``preprocess_page`` its letterbox of a page the worker decoded (``worker.runtime.documents``); ``postprocess``
is ``worker.runtime.inference.postprocess`` (the classify/embed contract, docs/contracts.md) with the
abstention policy shipped next to the ONNX (``abstention.json``, written by scripts/train_model.py).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from worker.runtime import abstention, documents
from worker.runtime import preprocess as image_preprocess

POLICY_PATH = Path(__file__).resolve().parent / abstention.POLICY_FILE


@functools.cache
def _policy() -> abstention.Policy:
    return abstention.load_policy(POLICY_PATH)


def preprocess(data: bytes, params: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """Image bytes -> ``{"IMAGE": [1, 192, 192] FP32}``; bad input raises the worker's typed errors."""
    return {"IMAGE": image_preprocess.preprocess_bytes(data)}


def preprocess_page(page: documents.Page, params: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """A page the worker decoded (at 192 px) -> ``{"IMAGE": [1, 192, 192] FP32}``, the same letterbox."""
    return {"IMAGE": image_preprocess.image_to_tensor(page.image)}


def postprocess(outputs: dict[str, np.ndarray[Any, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """``{"classify": {...}, "embed": {...}}``, limited to ``params["analyses"]`` (both when absent)."""
    # Imported here, not at the top: the preprocess pool's processes import this module and must not
    # pay for the Triton client that worker.runtime.inference imports.
    from worker.runtime import inference  # noqa: PLC0415

    analyses = tuple(params.get("analyses") or ("classify", "embed"))
    return inference.postprocess(
        outputs["CLASS_PROBS"], outputs["EMBEDDING"], analyses, decision_policy=_policy()
    )
