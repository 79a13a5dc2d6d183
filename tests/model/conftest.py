"""The model card's evaluation set (worker.dev.model_card), generated once per session for the model tests."""

from __future__ import annotations

import numpy as np
import pytest

from worker.dev import drawings, model_card
from worker.models.drawing_analyzer import model_spec, preprocessing


@pytest.fixture(scope="session")
def eval_drawings() -> tuple[np.ndarray, np.ndarray]:
    """240 drawings (40 per class, every third JPEG) at 877x620, preprocessed; their class indices."""
    tensors, labels = [], []
    for data, label in drawings.dataset(
        model_card.EVAL_DRAWINGS, seed=model_card.EVAL_SEED, size=model_card.EVAL_SIZE, fmt="mixed"
    ):
        tensors.append(preprocessing.preprocess_bytes(data))
        labels.append(model_spec.CLASS_NAMES.index(label))
    return np.stack(tensors), np.array(labels)


@pytest.fixture(scope="session")
def eval_negatives() -> tuple[np.ndarray, list[str]]:
    """264 non-drawings (24 of each kind, the four unseen in training included), preprocessed; kinds."""
    tensors, kinds = [], []
    for data, kind in drawings.negative_dataset(
        model_card.EVAL_NEGATIVES, seed=model_card.EVAL_SEED, size=model_card.EVAL_SIZE, fmt="mixed"
    ):
        tensors.append(preprocessing.preprocess_bytes(data))
        kinds.append(kind)
    return np.stack(tensors), kinds
