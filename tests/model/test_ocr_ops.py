"""The OCR packages' ops (text_detector/detection.py, text_recognizer/recognition.py) against RapidOCR 1.4.4.

The modules are loaded by file path, as the worker will load a handler's siblings. Each step is compared
with RapidOCR's own code on the same input, bit for bit, and then the whole composition with RapidOCR's
pipeline on generated drawings (which runs RapidOCR itself: about a second a page on 2 cores).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from rapidocr_onnxruntime.ch_ppocr_cls.text_cls import TextClassifier
from rapidocr_onnxruntime.ch_ppocr_det.text_detect import TextDetector
from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess, DetPreProcess
from rapidocr_onnxruntime.ch_ppocr_rec.text_recognize import TextRecognizer
from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode
from rapidocr_onnxruntime.main import RapidOCR
from rapidocr_onnxruntime.utils.process_img import reduce_max_side

from worker.dev import drawings, ocr_pipeline

det = ocr_pipeline.detection_ops()
rec = ocr_pipeline.recognition_ops()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """det, rec and cls fetched from rapidocr-onnxruntime's wheel (pip's download cached across runs)."""
    return ocr_pipeline.fetch_models(into=tmp_path_factory.mktemp("ocr-models"))


@pytest.fixture(scope="module")
def page() -> np.ndarray:
    """A generated drawing with extra text (some of it turned 90 degrees), A4 at 150 dpi, gray."""
    image, _, _ = drawings.render_text_image(3, extra_text=True)
    return np.asarray(image)


def bgr(image: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))


def synthetic_probabilities(seed: int, shape: tuple[int, int] = (320, 480)) -> np.ndarray:
    """A probability map with text-like blobs: bars of several sizes and angles, blurred, some faint."""
    rng = np.random.default_rng(seed)
    prob = np.zeros(shape, dtype=np.float32)
    for _ in range(40):
        cx, cy = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
        w, h, angle = rng.uniform(4, 60), rng.uniform(3, 12), rng.uniform(-30, 30)
        corners = cv2.boxPoints(((cx, cy), (w, h), angle)).astype(np.int32)
        level = rng.uniform(0.6, 0.98) if rng.random() < 0.8 else rng.uniform(0.3, 0.5)  # some too faint
        cv2.fillPoly(prob, [corners], float(level))
    return np.asarray(cv2.GaussianBlur(prob, (5, 5), 1.5), dtype=np.float32)


# --- detection, step by step against RapidOCR's code ------------------------------------------------------
def test_the_detection_input_is_rapidocrs_bit_for_bit(page: np.ndarray) -> None:
    prepared = det.detection_input(page)
    theirs = DetPreProcess(det.LIMIT_SIDE_LEN, "min", [det.MEAN] * 3, [det.STD] * 3)(bgr(page))
    assert theirs is not None
    assert prepared.tensor.shape == (3, 1248, 1760) == theirs.shape[1:]
    assert prepared.tensor.dtype == np.float32
    assert np.array_equal(prepared.tensor, theirs[0])  # gray through one channel = BGR through three


# 300 x 200: 200 -> 736 makes 1104 = 34.5 x 32; Python's round (half to even, as RapidOCR's) gives 34.
@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [(1240, 1754, (1248, 1760)), (300, 200, (1088, 736)), (800, 900, (800, 896))],
)
def test_detection_sizes_are_multiples_of_32_with_the_shorter_side_at_least_736(
    height: int, width: int, expected: tuple[int, int]
) -> None:
    assert det.detection_size(height, width) == expected


@pytest.mark.parametrize("seed", range(4))
def test_boxes_from_a_probability_map_are_rapidocrs(seed: int) -> None:
    # Given a probability map at a quarter of a working image's size (the graph's output is its input's)
    prob = synthetic_probabilities(seed)
    working = (640, 960)
    # When both post-processings read it
    ours, scores = det.working_boxes(prob[np.newaxis], working)
    post = DBPostProcess(
        thresh=det.THRESH, box_thresh=det.BOX_THRESH, max_candidates=det.MAX_CANDIDATES,
        unclip_ratio=det.UNCLIP_RATIO, use_dilation=True, score_mode="fast",
    )  # fmt: skip
    boxes, their_scores = post(prob[np.newaxis, np.newaxis], working)
    detector = object.__new__(TextDetector)
    filtered = detector.filter_tag_det_res(boxes, working)
    theirs = RapidOCR.sorted_boxes(filtered) if len(filtered) else []
    # then the boxes are the same, in the same reading order
    assert len(ours) == len(theirs) >= 10
    assert np.array_equal(ours, np.asarray(theirs, dtype=np.float32))
    assert sorted(scores) == sorted(float(s) for s in their_scores if s >= det.BOX_THRESH)


def test_reading_order_is_rows_top_to_bottom_then_left_to_right() -> None:
    def box(x: float, y: float) -> np.ndarray:
        return np.array([[x, y], [x + 20, y], [x + 20, y + 10], [x, y + 10]], dtype=np.float32)

    # A row whose boxes' tops differ by a few pixels, then two rows 30 px apart, in scrambled order
    boxes = [box(300, 104), box(10, 100), box(150, 96), box(40, 200), box(5, 230)]
    order = det.reading_order(boxes)
    assert order == [1, 2, 0, 3, 4]
    assert np.array_equal([boxes[i] for i in order], RapidOCR.sorted_boxes(np.stack(boxes)))


def test_a_large_page_works_on_a_shrunk_image_and_answers_in_its_own_pixels() -> None:
    # Given an A3 page at 300 dpi (4961 x 3508): RapidOCR shrinks the longer side to 2000
    page = np.random.default_rng(0).integers(0, 256, (3508, 4961), dtype=np.uint8)
    work, frame = det.working_image(page)
    shrunk, ratio_h, ratio_w = reduce_max_side(bgr(page), det.MAX_SIDE_LEN)
    assert work.shape == shrunk.shape[:2] == (1408, 1984)  # 62.5 x 32 rounds half to even
    assert np.array_equal(bgr(work), shrunk)
    assert (frame.ratio_h, frame.ratio_w) == (ratio_h, ratio_w)
    # then boxes found on it map to the page's pixels and back to whole working pixels
    found = np.array([[[100, 200], [300, 200], [300, 240], [100, 240]]], dtype=np.float32)
    on_page = frame.to_input(found)
    assert np.allclose(on_page[0, 2], (300 * 4961 / 1984, 240 * 3508 / 1408), atol=1e-3)
    assert np.array_equal(frame.to_working(on_page), found)


def test_a_thin_strip_gets_rapidocrs_black_bands_and_boxes_come_back_without_them() -> None:
    strip = np.full((40, 600), 255, dtype=np.uint8)  # wider than 8:1
    work, frame = det.working_image(strip)
    assert frame.pad_top == int(abs(max(int(600 / 8), 30) * 2 - 40) / 2) == 55
    assert work.shape == (40 + 2 * 55, 600) and work[:55].max() == 0
    box = np.array([[[10, 60], [100, 60], [100, 90], [10, 90]]], dtype=np.float32)
    assert np.array_equal(frame.to_input(box)[0, :, 1], [5, 5, 35, 35])


def test_a_bad_image_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="uint8 gray or BGR image"):
        det.working_image(np.zeros((10, 10), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8 gray or BGR image"):
        det.working_image(np.zeros((0, 10), dtype=np.uint8))


# --- recognition, step by step against RapidOCR's code ----------------------------------------------------
def test_the_dictionary_beside_the_module_is_the_rec_graphs_metadata(models: dict[str, Path]) -> None:
    graph = onnx.load(str(models["rec"]), load_external_data=False)
    metadata = {p.key: p.value for p in graph.metadata_props}["character"].splitlines()
    classes = rec.characters()
    assert list(classes[1:-1]) == metadata and len(metadata) == 6623
    assert (classes[0], classes[-1]) == ("blank", " ")
    assert graph.graph.output[0].name == rec.OUTPUT_NAME
    assert graph.graph.output[0].type.tensor_type.shape.dim[2].dim_value == len(classes) == 6625


GROW = ((-3, -4), (3, -4), (3, 4), (-3, 4))


def quads(page: np.ndarray) -> list[np.ndarray]:
    """Boxes like the detector's on a drawing: its ground truth grown a little, clockwise."""
    _, _, lines = drawings.render_text_image(3, extra_text=True)
    return [(np.array(line.box).round() + np.array(GROW)).astype(np.float32) for line in lines]


def test_crops_are_rapidocrs_get_rotate_crop_image(page: np.ndarray) -> None:
    boxes = quads(page)
    ours = [rec.crop_text(page, box) for box in boxes]
    theirs = RapidOCR.get_crop_img_list(None, bgr(page), [b.copy() for b in boxes])
    assert any(c.shape[0] > c.shape[1] for c in ours) is False  # tall (turned) text comes out lying down
    for mine, other in zip(ours, theirs, strict=True):
        assert np.array_equal(bgr(np.ascontiguousarray(mine)), other)


def test_recognition_batches_are_rapidocrs_resize_and_padding(page: np.ndarray) -> None:
    crops = [rec.crop_text(page, box) for box in quads(page)]
    recognizer = object.__new__(TextRecognizer)
    recognizer.rec_image_shape = [3, rec.REC_HEIGHT, rec.REC_MIN_WIDTH]
    order = np.argsort(np.array([c.shape[1] / float(c.shape[0]) for c in crops]))
    batches = rec.rapidocr_batches(crops)
    assert [i for indices, _ in batches for i in indices] == [int(i) for i in order]
    for indices, tensor in batches:
        widest = max(
            rec.REC_MIN_WIDTH / rec.REC_HEIGHT, *(crops[i].shape[1] / crops[i].shape[0] for i in indices)
        )
        expected = np.stack([recognizer.resize_norm_img(bgr(crops[i]), widest) for i in indices])
        assert tensor.dtype == np.float32 and np.array_equal(tensor, expected)


def test_a_crop_alone_is_its_natural_width_and_pads_with_zeros() -> None:
    crop = np.full((24, 100), 200, dtype=np.uint8)
    assert rec.natural_width(crop) == 200
    tensor = rec.crop_tensor(crop)
    assert tensor.shape == (3, 48, 200) and np.allclose(tensor, 200 / 255 * 2 - 1)
    assert rec.crop_tensor(crop, width=150).shape == (3, 48, 150)
    padded = rec.pad_to_width(tensor, 320)
    assert padded.shape == (3, 48, 320) and not padded[:, :, 200:].any()
    with pytest.raises(ValueError, match="does not fit"):
        rec.pad_to_width(tensor, 100)


def test_ctc_decoding_is_rapidocrs() -> None:
    # Given rows that repeat characters, put blanks between repeats, and one row of blanks only
    classes = rec.characters()
    rng = np.random.default_rng(0)
    probabilities = rng.random((3, 40, len(classes))).astype(np.float32)
    indices = rng.integers(0, len(classes), size=(3, 40))
    indices[1, ::2] = 0
    indices[2, :] = 0
    for b in range(3):
        probabilities[b, np.arange(40), indices[b]] += 5.0
    probabilities /= probabilities.sum(axis=2, keepdims=True)
    theirs = CTCLabelDecode(character=list(classes[1:-1]))(probabilities)
    assert rec.decode(probabilities) == [(text, score) for text, score in theirs]
    assert rec.decode(probabilities)[2] == ("", 0.0)


def test_lines_under_the_text_score_are_dropped_and_the_order_kept() -> None:
    boxes = np.arange(24, dtype=np.float32).reshape(3, 4, 2)
    lines = rec.read_lines(boxes, [("A", 0.9), ("B", 0.49), ("C", 0.5)])
    assert [(x["text"], x["box"]) for x in lines] == [("A", boxes[0].tolist()), ("C", boxes[2].tolist())]
    with pytest.raises(ValueError, match="3 boxes but 2"):
        rec.read_lines(boxes, [("A", 0.9), ("B", 0.9)])


def test_the_angle_classifiers_input_and_decision_are_rapidocrs(page: np.ndarray) -> None:
    crops = [rec.crop_text(page, box) for box in quads(page)]
    classifier = object.__new__(TextClassifier)
    classifier.cls_image_shape = list(rec.CLS_SHAPE)
    for crop in crops:
        assert np.array_equal(rec.angle_tensor(crop), classifier.resize_norm_img(bgr(crop)))
    assert rec.is_upside_down([0.05, 0.95]) and not rec.is_upside_down([0.11, 0.89])
    assert not rec.is_upside_down([0.95, 0.05])
    assert np.array_equal(rec.turn_upside_down(crops[0]), crops[0][::-1, ::-1])


# --- the whole composition against RapidOCR's pipeline ------------------------------------------------------
@pytest.fixture(scope="module")
def pipelines(models: dict[str, Path]) -> Iterator[tuple[Any, Any]]:
    yield ocr_pipeline.OpsPipeline(dict(models), use_cls=True), ocr_pipeline.RapidOcrPipeline()


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "extra_text"), [(3, True), (8, False)])
def test_the_composition_answers_what_rapidocr_answers(
    pipelines: tuple[Any, Any], seed: int, extra_text: bool
) -> None:
    ops, rapid = pipelines
    image, _, truth = drawings.render_text_image(seed, extra_text=extra_text)
    page = np.asarray(image)
    ours, theirs = ops.read(page).lines, rapid.read(page)
    assert len(ours) == len(theirs) >= len(truth) // 2
    for mine, other in zip(ours, theirs, strict=True):
        assert mine == other  # text, score and box, exactly


def test_a_page_without_text_has_no_lines(models: dict[str, Path]) -> None:
    ops = ocr_pipeline.OpsPipeline(dict(models))
    read = ops.read(np.full((400, 300), 250, dtype=np.uint8))
    assert read.lines == [] and read.crop_widths == []


@pytest.mark.slow
def test_detection_in_fp16_holds_only_with_its_out_of_range_batchnorm_kept_fp32(
    models: dict[str, Path], tmp_path: Path
) -> None:
    from worker.dev import ocr_eval  # noqa: PLC0415
    from worker.runtime.model_packages import onnx_tools  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter warns about every weight it rounds
        plain = onnx_tools.fp16_graph(models["det"], tmp_path / "det16.onnx")
        kept = onnx_tools.fp16_graph(models["det"], tmp_path / "det16k.onnx", keep_out_of_range=True)
    page = np.asarray(drawings.render_text_image(8)[0])
    reference = ocr_pipeline.OpsPipeline(dict(models), use_cls=True).read(page).lines
    collapsed = ocr_pipeline.OpsPipeline({**models, "det": plain}, use_cls=True).read(page).lines
    held = ocr_pipeline.OpsPipeline({**models, "det": kept}, use_cls=True).read(page).lines
    # A BatchNorm variance of 9.8e7, clamped to 1e4 by the converter, wrecks every box; kept FP32, the
    # FP16 detector answers (nearly) the FP32 answer
    assert ocr_eval.agreement(collapsed, reference)[0] == 0
    agreed, lines = ocr_eval.agreement(held, reference)
    assert lines > 10 and agreed >= 0.9 * lines
