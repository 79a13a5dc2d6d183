"""The procedural drawing generator: deterministic, all classes, realistic sizes, decodable output."""

from __future__ import annotations

import hashlib
import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageDraw

from worker.dev import drawings
from worker.models.drawing_analyzer import model_spec, preprocessing


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
    tensor = preprocessing.preprocess_bytes(data)
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
    full = preprocessing.image_to_tensor(drawings.render_image(11, "flange")[0])
    half = preprocessing.image_to_tensor(drawings.render_image(11, "flange", size=(877, 620))[0])
    # Same layout: the ink maps overlap far more than two different drawings do.
    other = preprocessing.image_to_tensor(drawings.render_image(12, "flange", size=(877, 620))[0])
    assert (
        np.corrcoef(full.ravel(), half.ravel())[0, 1] > np.corrcoef(half.ravel(), other.ravel())[0, 1] + 0.2
    )


def test_unknown_class_and_format() -> None:
    with pytest.raises(ValueError, match="unknown part class"):
        drawings.render_drawing(1, "teapot")
    with pytest.raises(ValueError, match="unknown format"):
        drawings.render_drawing(1, fmt="gif")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", drawings.ALL_NEGATIVE_KINDS)
def test_every_negative_kind_renders_deterministic_decodable_pages(kind: str) -> None:
    first = drawings.render_negative(5, kind, size=(438, 310), fmt="jpeg")
    assert first == drawings.render_negative(5, kind, size=(438, 310), fmt="jpeg")
    assert first[1] == kind
    tensor = preprocessing.preprocess_bytes(first[0])
    assert tensor.shape == model_spec.INPUT.shape
    assert first != drawings.render_negative(6, kind, size=(438, 310), fmt="jpeg")


def test_negative_sets_are_balanced_and_unseen_kinds_stay_out_of_training() -> None:
    assert not set(drawings.NEGATIVE_KINDS) & set(drawings.UNSEEN_NEGATIVE_KINDS)
    kinds = [kind for _, kind in drawings.negative_dataset(22, seed=9, size=(219, 155), fmt="mixed")]
    assert Counter(kinds) == Counter({k: 2 for k in drawings.ALL_NEGATIVE_KINDS})
    assert kinds == drawings.negative_kinds(22)
    with pytest.raises(ValueError, match="unknown negative kind"):
        drawings.render_negative(1, "teapot")


def test_the_issue_inputs() -> None:
    inputs = drawings.issue_inputs(size=(438, 310))
    assert list(inputs) == ["blank_a4", "uniform_noise", "typed_text", "photo_like"]
    blank = preprocessing.preprocess_bytes(inputs["blank_a4"])
    assert float(blank.max()) == 0.0  # all paper
    noise = preprocessing.preprocess_bytes(inputs["uniform_noise"])
    assert 0.4 < float(noise[0, 96].mean()) < 0.6  # a row inside the letterbox, away from the padding
    assert Image.open(io.BytesIO(inputs["photo_like"])).mode == "RGB"


# --- annotation symbols (the symbol recognizer's ground truth) --------------------------------------------
SMALL = (438, 310)


def test_symbol_drawings_are_deterministic_per_seed() -> None:
    first = drawings.render_symbol_drawing(21, size=SMALL)
    assert first == drawings.render_symbol_drawing(21, size=SMALL)
    assert first != drawings.render_symbol_drawing(22, size=SMALL)


def test_without_symbols_the_sheet_is_the_plain_drawing() -> None:
    # The symbols come from their own generator: the base drawing and its scan stay render_image's.
    plain, _ = drawings.render_image(8, size=SMALL)
    bare, present = drawings.render_symbol_image(8, (), size=SMALL)
    assert present == ()
    assert np.array_equal(np.asarray(plain), np.asarray(bare))


@pytest.mark.parametrize("symbol", drawings.SYMBOL_NAMES)
def test_each_symbol_adds_ink_where_it_is_drawn(symbol: str) -> None:
    bare, _ = drawings.render_symbol_image(8, (), size=(877, 620))
    marked, present = drawings.render_symbol_image(8, (symbol,), size=(877, 620))
    assert present == (symbol,)
    darker = np.asarray(bare, dtype=np.int16) - np.asarray(marked, dtype=np.int16) > 60
    assert 30 < int(darker.sum()) < 20_000  # a mark of a few strokes, not nothing and not a page


def test_random_subsets_cover_every_symbol_present_and_absent() -> None:
    subsets = [drawings.render_symbol_image(s, size=(219, 155))[1] for s in range(40)]
    for symbol in drawings.SYMBOL_NAMES:
        carrying = sum(symbol in subset for subset in subsets)
        assert 8 <= carrying <= 32, (symbol, carrying)
    assert len(set(subsets)) > 20
    assert all(list(s) == [n for n in drawings.SYMBOL_NAMES if n in s] for s in subsets)  # declared order


def test_symbol_dataset_formats_and_unknown_symbol() -> None:
    items = list(drawings.symbol_dataset(3, seed=drawings.SYMBOL_HELDOUT_SEED, size=SMALL, fmt="mixed"))
    assert [Image.open(io.BytesIO(d)).format for d, _ in items] == ["PNG", "PNG", "JPEG"]
    assert items[0] == drawings.render_symbol_drawing(
        drawings.dataset_seed(0, seed=drawings.SYMBOL_HELDOUT_SEED), size=SMALL
    )
    with pytest.raises(ValueError, match="unknown symbols"):
        drawings.render_symbol_image(1, ("teapot",))


# --- text and its ground truth (OCR) --------------------------------------------------------------------
def _digest(image: Image.Image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()[:16]


def test_recording_the_text_changes_no_pixel() -> None:
    # Digests of the pixels as the generator drew them before it recorded any text (same seeds, sizes):
    # the other models' training sets and references depend on every one of them.
    assert [_digest(drawings.render_image(s, size=(877, 620))[0]) for s in range(3)] == [
        "857454a70a48a26c",
        "aa2baf0460834b9a",
        "ca43ccbd3373b329",
    ]
    assert _digest(drawings.render_image(7)[0]) == "d5ffd798e7cf1748"
    assert _digest(drawings.render_symbol_image(8, size=(877, 620))[0]) == "cd23526898a677c5"
    assert _digest(drawings.render_negative_image(3, "title_block", size=(877, 620))[0]) == "42528b0dcf2ffcf9"
    image, label, lines = drawings.render_text_image(7)
    assert _digest(image) == "d5ffd798e7cf1748" and label == drawings.render_image(7)[1] and lines


def test_every_text_the_sheet_draws_is_recorded_with_its_kind() -> None:
    _, _, lines = drawings.render_text_image(5)
    kinds = Counter(line.kind for line in lines)
    assert kinds["drawing_number"] == 1 and kinds["scale"] == 1
    assert kinds["title_block"] in (9, 12)  # 3 or 4 rows of 3 cells
    assert kinds["dimension"] + kinds["diameter"] >= 2
    notes = [line.text for line in lines if line.kind == "note"]
    assert notes and all(text.startswith(f"{i + 1}. ") for i, text in enumerate(notes))
    assert all(line.angle_deg == 0 for line in lines)
    assert {line.kind for line in drawings.render_text_image(8, size=(877, 620))[2]} <= {
        "title_block", "drawing_number", "scale", "note", "dimension", "diameter",
    }  # fmt: skip


def _ink_inside(image: Image.Image, box: tuple[tuple[float, float], ...]) -> float:
    """Fraction of the box's pixels darker than 128 (mid grey)."""
    mask = Image.new("1", image.size, 0)
    ImageDraw.Draw(mask).polygon([(x, y) for x, y in box], fill=1)
    inside = np.asarray(mask, dtype=bool)
    return float((np.asarray(image)[inside] < 128).mean()) if inside.any() else 0.0


def test_the_boxes_follow_the_scanners_skew() -> None:
    # Given a drawing the scanner turned by about 1.1 degrees (seed 6)
    image, _, lines = drawings.render_text_image(6)
    sheet = drawings._unscanned(6, None, drawings.DEFAULT_SIZE)
    _, skew = drawings._scan_skewed(sheet.image, sheet.rng)
    assert abs(skew) > 1.0
    upright = sheet.canvas.draw.lines  # type: ignore[attr-defined]  # the _TextDraw's record, unskewed
    # then every recorded box holds ink, and far more than the same boxes before the skew do
    skewed = [_ink_inside(image, line.box) for line in lines]
    unskewed = [_ink_inside(image, line.box) for line in upright]
    assert min(skewed) > 0.05, [(line.text, round(f, 3)) for line, f in zip(lines, skewed, strict=True)]
    assert sum(skewed) > 2 * sum(unskewed)


def test_extra_text_adds_lines_on_the_same_drawing_and_scan() -> None:
    plain, _, base = drawings.render_text_image(5, size=(877, 620))
    extra, _, lines = drawings.render_text_image(5, size=(877, 620), extra_text=True)
    # The drawing's own lines come first, unchanged; 4-8 extra lines follow, some turned 90 degrees
    assert lines[: len(base)] == base
    added = lines[len(base) :]
    assert 4 <= len(added) <= 8 and {line.kind for line in added} <= set(drawings.EXTRA_TEXT_KINDS)
    full, _, full_lines = drawings.render_text_image(5, extra_text=True)
    assert any(line.angle_deg == 90 for line in full_lines)
    assert all(_ink_inside(full, line.box) > 0.1 for line in full_lines)  # A4 at 150 dpi: legible ink
    # and the pixels differ only inside the extra lines' boxes (a pixel of blur around them)
    changed = np.asarray(plain, dtype=np.int16) != np.asarray(extra, dtype=np.int16)
    mask = Image.new("1", plain.size, 0)
    for line in added:
        xs, ys = [x for x, _ in line.box], [y for _, y in line.box]
        ImageDraw.Draw(mask).rectangle((min(xs) - 3, min(ys) - 3, max(xs) + 3, max(ys) + 3), fill=1)
    assert changed.any() and not (changed & ~np.asarray(mask, dtype=bool)).any()


def test_text_drawings_encode_like_drawings() -> None:
    data, label, lines = drawings.render_text_drawing(7, size=(877, 620), fmt="jpeg")
    assert (data, label) == drawings.render_drawing(7, size=(877, 620), fmt="jpeg")
    assert lines == drawings.render_text_image(7, size=(877, 620))[2]
