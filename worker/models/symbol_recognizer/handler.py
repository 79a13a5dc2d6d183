"""The symbol recognizer's handler: which annotation symbols a drawing carries (docs/model-card-symbols.md).

``preprocess`` is the worker's own decode (``worker.runtime.documents.images``: the byte and pixel bounds,
the format allow-list, first frame only, EXIF orientation, grayscale) and letterbox, at this model's 384 px,
with one step of its own before the letterbox: an ink-preserving reduction (the darkest pixel of each
f x f block, f the whole part of the reduction). Symbols are drawn in thin strokes; an averaging
reduction of a 1 px stroke by 4 leaves a quarter of its ink, so at 384 px it fades into the scan's
grain, while the block minimum keeps it dark. ``preprocess_page`` does the same to a page the worker
decoded (``worker.runtime.documents``: a TIFF frame, a rendered PDF page). ``postprocess`` turns the
graph's calibrated per-symbol probabilities into the ``symbols`` analysis: every score, and the symbols
at or above the threshold.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from PIL import Image

from worker.runtime import documents
from worker.runtime.documents import images

#: The graph's output order (worker.dev.drawings.SYMBOL_NAMES; a model test keeps them equal).
SYMBOLS: Final = ("surface_finish", "welding", "tolerance_frame", "section_arrow", "datum", "balloon")
#: The input side in pixels: symbols are 12-20 mm on a 420 mm sheet, ~11 px and more at 384.
INPUT_SIZE_PX: Final = 384
#: A symbol is present at a calibrated probability >= THRESHOLD (chosen in the model card).
THRESHOLD: Final = 0.5
#: The symbols this package decides present/absent: those whose held-out figures meet the model card's
#: targets (tests/model/test_symbol_card.py keeps this equal to the card). The others get a score but no
#: decision (``undecided``): near-chance detections must not read like answers.
DECIDED: Final = ("tolerance_frame", "section_arrow", "datum")


def preprocess(data: bytes, params: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """Image bytes -> ``{"SHEET": [1, 384, 384] FP32}``; bad input raises the worker's typed errors."""
    return {"SHEET": sheet_tensor(images.decode_input(data, size_px=INPUT_SIZE_PX))}


def preprocess_page(page: documents.Page, params: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """A page the worker decoded (at 384 px) -> ``{"SHEET": [1, 384, 384] FP32}``, as ``preprocess``."""
    return {"SHEET": sheet_tensor(page.image)}


def sheet_tensor(image: Image.Image) -> np.ndarray[Any, Any]:
    """A decoded mode-``L`` sheet -> ``[1, 384, 384]``: ink-preserving reduction, then the letterbox."""
    factor = int(max(image.size) / INPUT_SIZE_PX)
    if factor >= 2:
        pixels = np.asarray(image)
        height, width = (pixels.shape[0] // factor) * factor, (pixels.shape[1] // factor) * factor
        blocks = pixels[:height, :width].reshape(height // factor, factor, width // factor, factor)
        image = Image.fromarray(np.ascontiguousarray(blocks.min(axis=(1, 3))))
    return images.letterbox(image, size_px=INPUT_SIZE_PX)


def postprocess(outputs: dict[str, np.ndarray[Any, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """``{"symbols": {"present": [...], "scores": {symbol: p}, "threshold": 0.5, "undecided": [...]}}``.

    ``present`` names the DECIDED symbols at or above the threshold (SYMBOLS order); ``undecided`` the
    symbols the model cannot yet tell reliably (their scores are calibrated but no decision is made).
    """
    probs = np.asarray(outputs["SYMBOL_PROBS"], dtype=np.float64).reshape(-1)
    if probs.shape != (len(SYMBOLS),) or not np.all(np.isfinite(probs)):
        raise ValueError(f"SYMBOL_PROBS must be {len(SYMBOLS)} finite values, got shape {probs.shape}")
    scores = {name: round(float(p), 4) for name, p in zip(SYMBOLS, probs, strict=True)}
    present = [name for name, p in zip(SYMBOLS, probs, strict=True) if name in DECIDED and p >= THRESHOLD]
    undecided = [name for name in SYMBOLS if name not in DECIDED]
    return {"symbols": {"present": present, "scores": scores, "threshold": THRESHOLD, "undecided": undecided}}
