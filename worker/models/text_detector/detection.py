"""PP-OCRv4 text detection around its ONNX graph: a page -> the graph's input, its output -> text boxes.

The graph (``ch_PP-OCRv4_det_infer.onnx`` from rapidocr-onnxruntime 1.4.4) is DBNet: input ``x`` FP32
[N, 3, H, W] (H and W multiples of 32), output ``sigmoid_0.tmp_0`` FP32 [N, 1, H, W], the probability that
a pixel is text. These functions are the steps RapidOCR 1.4.4 runs around it with its default
``config.yaml``, in its order and with its arithmetic, so that the boxes agree with RapidOCR's own
pipeline (``RapidOCR.__call__``: ``preprocess``, ``maybe_add_letterbox``, ``TextDetector``,
``DBPostProcess``, ``filter_tag_det_res``, ``sorted_boxes``, ``_get_origin_points``):

1. ``working_image``: a page whose longer side exceeds ``MAX_SIDE_LEN`` is shrunk (each side rounded to a
   multiple of 32), one whose shorter side is under ``MIN_SIDE_LEN`` is enlarged; a page at most
   ``MIN_HEIGHT`` high or wider than ``WIDTH_HEIGHT_RATIO`` times its height gets black bands above and
   below. Text crops are cut from this image too (the recogniser calls the same function).
2. ``detection_input``: the working image resized so its shorter side is at least ``LIMIT_SIDE_LEN``
   (each side rounded to a multiple of 32; bilinear), scaled to [-1, 1], channels first.
3. ``boxes_from_probabilities``: threshold ``THRESH``, 2x2 dilation, contours, minimum-area rectangles,
   mean probability inside (``BOX_THRESH``), unclipped by ``UNCLIP_RATIO`` (pyclipper), rectangles again,
   back to the working image's pixels, clockwise corners, tiny boxes dropped, reading order.
4. ``Frame.to_input``: boxes in the input image's own pixels (the page's frame).

A gray (2-D) image is treated as RapidOCR treats it, as three equal BGR channels; every step here is
per channel, so it runs on one and the tensor repeats it. Needs numpy, OpenCV, pyclipper and shapely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt
import pyclipper
from shapely.geometry import Polygon

INPUT_NAME: Final = "x"
OUTPUT_NAME: Final = "sigmoid_0.tmp_0"

# RapidOCR 1.4.4 config.yaml, Global
MAX_SIDE_LEN: Final = 2000
MIN_SIDE_LEN: Final = 30
MIN_HEIGHT: Final = 30
WIDTH_HEIGHT_RATIO: Final = 8
# config.yaml, Det (limit_type "min": the shorter side is brought up to LIMIT_SIDE_LEN, never down)
LIMIT_SIDE_LEN: Final = 736
MEAN: Final = 0.5
STD: Final = 0.5
THRESH: Final = 0.3
BOX_THRESH: Final = 0.5
MAX_CANDIDATES: Final = 1000
UNCLIP_RATIO: Final = 1.6
#: DBPostProcess's smallest side of a box before (``MIN_SIZE``) and after (``MIN_SIZE + 2``) unclipping.
MIN_SIZE: Final = 3
#: filter_tag_det_res drops boxes whose width or height (truncated) is at most this many pixels.
MIN_BOX_SIDE: Final = 3
#: sorted_boxes: boxes whose first corners are closer than this vertically are one row, read left to right.
ROW_TOLERANCE_PX: Final = 10

Image = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Frame:
    """How the working image maps to the input image: ``input = (working - (0, pad_top)) * ratio``."""

    input_height: int
    input_width: int
    ratio_h: float = 1.0
    ratio_w: float = 1.0
    pad_top: int = 0

    def to_input(self, boxes: FloatArray) -> FloatArray:
        """Boxes [K, 4, 2] in working pixels -> input pixels, clamped to the input image (as RapidOCR)."""
        out = np.array(boxes, dtype=np.float32).reshape(-1, 4, 2)
        out[:, :, 1] -= self.pad_top
        out[:, :, 0] *= self.ratio_w
        out[:, :, 1] *= self.ratio_h
        out = np.where(out < 0, 0, out).astype(np.float32)
        out[..., 0] = np.minimum(out[..., 0], self.input_width)
        out[..., 1] = np.minimum(out[..., 1], self.input_height)
        return out

    def to_working(self, boxes: FloatArray) -> FloatArray:
        """Input pixels -> working pixels (``to_input``'s inverse away from the clamp).

        Rounded to 1/1000 pixel so that a box that came from the detector gets back the whole pixels it had:
        the crop's size is truncated from the corners' distances, and 58.99999 would lose a column.
        """
        out = np.array(boxes, dtype=np.float64).reshape(-1, 4, 2)
        out[:, :, 0] /= self.ratio_w
        out[:, :, 1] /= self.ratio_h
        out[:, :, 1] += self.pad_top
        return np.round(out, 3).astype(np.float32)


@dataclass(frozen=True)
class DetectionInput:
    """The graph's input for one page (no batch axis) and what is needed to read its output back."""

    tensor: FloatArray  # [3, H, W], H and W multiples of 32
    frame: Frame
    #: The working image's height and width, the frame the probability map is scaled back to.
    working_shape: tuple[int, int]


@dataclass(frozen=True)
class Detection:
    """Text boxes of one page in reading order: [K, 4, 2] corners (clockwise from top-left) and scores."""

    boxes: FloatArray
    scores: tuple[float, ...]


def _resize_to_32(image: Image, ratio: float) -> Image:
    h, w = image.shape[:2]
    resize_h = round(int(h * ratio) / 32) * 32
    resize_w = round(int(w * ratio) / 32) * 32
    if resize_h <= 0 or resize_w <= 0:
        raise ValueError(f"a {w}x{h} image cannot be scaled for text detection")
    return np.asarray(cv2.resize(image, (resize_w, resize_h)), dtype=np.uint8)


def working_image(image: Image) -> tuple[Image, Frame]:
    """The image detection and cropping work on (usually the input itself) and its frame."""
    if image.ndim not in (2, 3) or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        raise ValueError(f"expected a uint8 gray or BGR image, got {image.dtype} {image.shape}")
    raw_h, raw_w = image.shape[:2]
    ratio_h = ratio_w = 1.0
    work = image
    if max(raw_h, raw_w) > MAX_SIDE_LEN:
        work = _resize_to_32(work, MAX_SIDE_LEN / max(raw_h, raw_w))
    if min(work.shape[:2]) < MIN_SIDE_LEN:
        work = _resize_to_32(work, MIN_SIDE_LEN / min(work.shape[:2]))
    if work is not image:
        # Both ratios against the input (RapidOCR keeps only the last resize's; identical unless both ran).
        ratio_h, ratio_w = raw_h / work.shape[0], raw_w / work.shape[1]
    h, w = work.shape[:2]
    pad_top = 0
    if h <= MIN_HEIGHT or w / h > WIDTH_HEIGHT_RATIO:
        pad_top = int(abs(max(int(w / WIDTH_HEIGHT_RATIO), MIN_HEIGHT) * 2 - h) / 2)
        work = np.asarray(cv2.copyMakeBorder(work, pad_top, pad_top, 0, 0, cv2.BORDER_CONSTANT, value=0))
    return work, Frame(raw_h, raw_w, ratio_h, ratio_w, pad_top)


def detection_size(height: int, width: int) -> tuple[int, int]:
    """The graph input's (H, W) for a working image of that size (``LIMIT_SIDE_LEN``, multiples of 32)."""
    ratio = LIMIT_SIDE_LEN / min(height, width) if min(height, width) < LIMIT_SIDE_LEN else 1.0
    return round(int(height * ratio) / 32) * 32, round(int(width * ratio) / 32) * 32


def detection_input(image: Image) -> DetectionInput:
    """One page (uint8, gray or BGR) -> the graph's input tensor [3, H, W] and the page's frame."""
    work, frame = working_image(image)
    height, width = detection_size(*work.shape[:2])
    resized = cv2.resize(work, (width, height))
    # RapidOCR's arithmetic: float32 * (1/255), then float64 mean and std, then float32.
    normalised = ((resized.astype(np.float32) * (1 / 255.0) - np.float64(MEAN)) / np.float64(STD)).astype(
        np.float32
    )
    if normalised.ndim == 2:
        tensor = np.broadcast_to(normalised, (3, height, width)).copy()
    else:
        tensor = np.ascontiguousarray(normalised.transpose(2, 0, 1))
    return DetectionInput(tensor, frame, (work.shape[0], work.shape[1]))


def boxes_from_probabilities(probabilities: FloatArray, prepared: DetectionInput) -> Detection:
    """The graph's output for one page ([1, H, W] or [H, W]) -> boxes in the input image's pixels."""
    boxes, scores = working_boxes(probabilities, prepared.working_shape)
    return Detection(prepared.frame.to_input(boxes), scores)


def working_boxes(
    probabilities: FloatArray, working_shape: tuple[int, int]
) -> tuple[FloatArray, tuple[float, ...]]:
    """DB post-processing: boxes [K, 4, 2] in the working image's pixels, in reading order, and scores."""
    map_h, map_w = int(probabilities.shape[-2]), int(probabilities.shape[-1])
    prob = np.asarray(probabilities, dtype=np.float32).reshape(map_h, map_w)
    height, width = working_shape
    mask = cv2.dilate((prob > THRESH).astype(np.uint8), np.ones((2, 2), dtype=np.uint8))
    contours, _ = cv2.findContours((mask * 255).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    found: list[tuple[npt.NDArray[np.int32], float]] = []
    for contour in contours[:MAX_CANDIDATES]:
        points, short_side = _min_area_box(contour)
        if short_side < MIN_SIZE:
            continue
        score = _box_score_fast(prob, points.reshape(-1, 2))
        if score < BOX_THRESH:
            continue
        grown, short_side = _min_area_box(_unclip(points))
        if short_side < MIN_SIZE + 2:
            continue
        grown[:, 0] = np.clip(np.round(grown[:, 0] / map_w * width), 0, width)
        grown[:, 1] = np.clip(np.round(grown[:, 1] / map_h * height), 0, height)
        found.append((grown.astype(np.int32), score))
    kept: list[tuple[FloatArray, float]] = []
    for pixels, score in found:
        ordered = _clip(_order_clockwise(pixels), height, width)
        if int(np.linalg.norm(ordered[0] - ordered[1])) <= MIN_BOX_SIDE:
            continue
        if int(np.linalg.norm(ordered[0] - ordered[3])) <= MIN_BOX_SIDE:
            continue
        kept.append((ordered, score))
    kept = [kept[i] for i in reading_order([box for box, _ in kept])]
    if not kept:
        return np.zeros((0, 4, 2), dtype=np.float32), ()
    return np.stack([box for box, _ in kept]).astype(np.float32), tuple(float(s) for _, s in kept)


def reading_order(boxes: list[FloatArray]) -> list[int]:
    """RapidOCR's ``sorted_boxes``: by the first corner's y then x, then rows within ``ROW_TOLERANCE_PX``
    read left to right (one backward pass of swaps per box). Returns the boxes' indices in that order."""
    order = sorted(range(len(boxes)), key=lambda i: (float(boxes[i][0][1]), float(boxes[i][0][0])))
    for i in range(len(order) - 1):
        for j in range(i, -1, -1):
            upper, lower = boxes[order[j]][0], boxes[order[j + 1]][0]
            if abs(lower[1] - upper[1]) < ROW_TOLERANCE_PX and lower[0] < upper[0]:
                order[j], order[j + 1] = order[j + 1], order[j]
            else:
                break
    return order


def _min_area_box(contour: npt.NDArray[Any]) -> tuple[FloatArray, float]:
    """The contour's minimum-area rectangle, corners from top-left clockwise, and its shorter side."""
    rect = cv2.minAreaRect(contour)
    points = sorted(cv2.boxPoints(rect), key=lambda p: p[0])
    first, fourth = (0, 1) if points[1][1] > points[0][1] else (1, 0)
    second, third = (2, 3) if points[3][1] > points[2][1] else (3, 2)
    box = np.array([points[first], points[second], points[third], points[fourth]])
    return box, min(rect[1])


def _box_score_fast(prob: FloatArray, box: FloatArray) -> float:
    """Mean probability inside the box polygon (its bounding window, corners truncated to pixels)."""
    h, w = prob.shape[:2]
    box = box.copy()
    xmin = int(np.clip(np.floor(box[:, 0].min()).astype(np.int32), 0, w - 1))
    xmax = int(np.clip(np.ceil(box[:, 0].max()).astype(np.int32), 0, w - 1))
    ymin = int(np.clip(np.floor(box[:, 1].min()).astype(np.int32), 0, h - 1))
    ymax = int(np.clip(np.ceil(box[:, 1].max()).astype(np.int32), 0, h - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    box[:, 0] -= xmin
    box[:, 1] -= ymin
    cv2.fillPoly(mask, [box.reshape(-1, 2).astype(np.int32)], 1)
    return float(cv2.mean(prob[ymin : ymax + 1, xmin : xmax + 1], mask)[0])


def _unclip(box: FloatArray) -> npt.NDArray[Any]:
    """The box grown by ``area * UNCLIP_RATIO / perimeter`` with rounded corners (pyclipper)."""
    polygon = Polygon(box)
    distance = polygon.area * UNCLIP_RATIO / polygon.length
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    paths = offset.Execute(distance)
    # One path in practice; RapidOCR reshapes them together, which equals concatenating them.
    return np.concatenate([np.asarray(p) for p in paths]).reshape(-1, 1, 2)


def _order_clockwise(points: npt.NDArray[np.int32]) -> FloatArray:
    """Top-left, top-right, bottom-right, bottom-left (imutils' order_points, as RapidOCR uses it).

    Sorted as whole pixels (int32), as RapidOCR sorts them: ties then fall the same way."""
    by_x = points[np.argsort(points[:, 0]), :]
    left, right = by_x[:2, :], by_x[2:, :]
    top_left, bottom_left = left[np.argsort(left[:, 1]), :]
    top_right, bottom_right = right[np.argsort(right[:, 1]), :]
    return np.array([top_left, top_right, bottom_right, bottom_left], dtype=np.float32)


def _clip(points: FloatArray, height: int, width: int) -> FloatArray:
    out = points.copy()
    out[:, 0] = np.trunc(np.clip(out[:, 0], 0, width - 1))
    out[:, 1] = np.trunc(np.clip(out[:, 1], 0, height - 1))
    return out
