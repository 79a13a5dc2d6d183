"""INT8 calibration data for TensorRT: generated drawings through the preprocessing contract.

Used by ``scripts/build_trt_engine --int8`` as polygraphy's ``--data-loader-script ...:load_data``.
Calibration uses its own seed base (4), distinct from training (1), the held-out set (2) and the tests (3).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.dev import drawings
from worker.models.drawing_analyzer import model_spec, preprocessing

CALIBRATION_SEED = 4
CALIBRATION_COUNT = 512
CALIBRATION_BATCH = 16


def load_data() -> Iterator[dict[str, np.ndarray]]:
    """Batches of ``CALIBRATION_BATCH`` preprocessed drawings (mixed PNG/JPEG, default A4 size)."""
    batch: list[np.ndarray] = []
    for data, _ in drawings.dataset(CALIBRATION_COUNT, seed=CALIBRATION_SEED, fmt="mixed"):
        batch.append(preprocessing.preprocess_bytes(data))
        if len(batch) == CALIBRATION_BATCH:
            yield {model_spec.INPUT.name: np.stack(batch)}
            batch = []
