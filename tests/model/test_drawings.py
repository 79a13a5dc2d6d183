"""The procedural drawing generator: deterministic, all classes, realistic sizes, decodable output."""

from __future__ import annotations

import hashlib
import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from worker.dev import drawings
from worker.runtime import model_spec, preprocess


def test_same_seed_same_bytes() -> None:
    first = drawings.render_drawing(42, size=(877, 620))
    assert first == drawings.render_drawing(42, size=(877, 620))
    assert (
        hashlib.sha256(first[0]).digest()
        != hashlib.sha256(drawings.render_drawing(43, size=(877, 620))[0]).digest()
    )


@pytest.mark.parametrize("part_class", model_spec.CLASS_NAMES)
def test_every_class_renders_a_decodable_drawing(part_class: str) -> None:
    data, label = drawings.render_drawing(7, part_class, fmt="jpeg")
    assert label == part_class
    image = Image.open(io.BytesIO(data))
    assert image.size == drawings.DEFAULT_SIZE
    tensor = preprocess.preprocess_bytes(data)
    assert tensor.shape == model_spec.INPUT.shape
    assert 0.01 < float(tensor.mean()) < 0.5  # ink on paper, not blank and not black


def test_png_default_is_a4_at_150_dpi() -> None:
    data, _ = drawings.render_drawing(3)
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.size, image.mode) == ("PNG", (1754, 1240), "L")


def test_a3_at_300_dpi() -> None:
    image, _ = drawings.render_image(5, "gear", size=(4961, 3508))
    assert image.size == (4961, 3508)


def test_dataset_is_balanced_and_deterministic() -> None:
    items = list(drawings.dataset(12, seed=9, size=(438, 310), fmt="mixed"))
    assert Counter(label for _, label in items) == Counter({c: 2 for c in model_spec.CLASS_NAMES})
    assert [Image.open(io.BytesIO(d)).format for d, _ in items[:3]] == ["PNG", "PNG", "JPEG"]
    assert items == list(drawings.dataset(12, seed=9, size=(438, 310), fmt="mixed"))
    assert drawings.dataset_labels(12, seed=9) == [label for _, label in items]


def test_reduced_size_is_the_same_picture() -> None:
    full = preprocess.image_to_tensor(drawings.render_image(11, "flange")[0])
    half = preprocess.image_to_tensor(drawings.render_image(11, "flange", size=(877, 620))[0])
    # Same layout: the ink maps overlap far more than two different drawings do.
    other = preprocess.image_to_tensor(drawings.render_image(12, "flange", size=(877, 620))[0])
    assert (
        np.corrcoef(full.ravel(), half.ravel())[0, 1] > np.corrcoef(half.ravel(), other.ravel())[0, 1] + 0.2
    )


def test_unknown_class_and_format() -> None:
    with pytest.raises(ValueError, match="unknown part class"):
        drawings.render_drawing(1, "teapot")
    with pytest.raises(ValueError, match="unknown format"):
        drawings.render_drawing(1, fmt="gif")  # type: ignore[arg-type]
