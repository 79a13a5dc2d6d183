"""PP-OCRv4 text recognition around its ONNX graph: page + text boxes -> crops -> inputs; outputs -> text.

The graph (``ch_PP-OCRv4_rec_infer.onnx`` from rapidocr-onnxruntime 1.4.4) is SVTR-LCNet with a CTC
head: input ``x`` FP32 [N, 3, 48, W] (W free), output ``softmax_11.tmp_0`` FP32 [N, W / 8, 6625], the
probabilities of the CTC blank (class 0), the 6,623 characters of ``dictionary.txt`` (the graph's
metadata ``character``, one per line) and a space (class 6624). These functions are the steps RapidOCR
1.4.4 runs around it with its default ``config.yaml``, with its arithmetic:

1. ``crop_text``: each box cut out with a perspective warp (bicubic, edges replicated) to the longer of
   each pair of opposite sides (truncated to whole pixels); a crop at least 1.5 times taller than wide is
   turned 90 degrees counter-clockwise (``get_rotate_crop_image``).
2. ``crop_tensor``: the crop scaled to height 48 (bilinear), width ``ceil(48 w / h)`` or the batch's width
   if that is less, scaled to [-1, 1], channels first. ``pad_to_width`` pads with 0 (mid grey after the
   scaling) to a batch's width: RapidOCR sorts a page's crops by aspect ratio and pads each group of
   ``REC_BATCH_NUM`` to its widest, at least ``REC_MIN_WIDTH`` (``rapidocr_batches``).
3. ``decode``: CTC greedy decoding (argmax per column, repeats merged, blanks dropped); the score is the
   mean probability of the kept columns.
4. ``read_lines``: a line whose score is under ``TEXT_SCORE`` is dropped; the others keep the order of
   their boxes (the detector's reading order).

Angle classification (``ch_ppocr_mobile_v2.0_cls_infer.onnx``, RapidOCR's ``use_cls``) turns a crop that
reads upside down: ``angle_tensor`` and ``is_upside_down``. A gray (2-D) image is treated as RapidOCR
treats it, as three equal channels. Needs numpy and OpenCV.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt

INPUT_NAME: Final = "x"
OUTPUT_NAME: Final = "softmax_11.tmp_0"
#: The dictionary: the graph's metadata ``character``, one character per line, committed beside this file.
DICTIONARY_FILE: Final = Path(__file__).with_name("dictionary.txt")
#: The crop height the graph reads.
REC_HEIGHT: Final = 48
#: RapidOCR's rec_img_shape width: the narrowest batch it forms (a ratio of 320/48).
REC_MIN_WIDTH: Final = 320
#: RapidOCR's rec_batch_num: crops sorted by aspect ratio, batched this many at a time.
REC_BATCH_NUM: Final = 6
#: RapidOCR's Global.text_score: lines scoring less are dropped.
TEXT_SCORE: Final = 0.5
#: get_rotate_crop_image turns a crop at least this much taller than wide.
TALL_CROP_RATIO: Final = 1.5

CLS_INPUT_NAME: Final = "x"
CLS_OUTPUT_NAME: Final = "save_infer_model/scale_0.tmp_1"
#: RapidOCR's cls_image_shape (C, H, W), cls_thresh and label_list.
CLS_SHAPE: Final = (3, 48, 192)
CLS_THRESH: Final = 0.9
CLS_LABELS: Final = ("0", "180")

Image = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float32]


@functools.cache
def characters(path: Path = DICTIONARY_FILE) -> tuple[str, ...]:
    """The output classes: ``"blank"`` (CTC), the dictionary's characters, then ``" "``."""
    return ("blank", *path.read_text(encoding="utf-8").splitlines(), " ")


def crop_text(image: Image, box: npt.ArrayLike) -> Image:
    """The box's quadrilateral (4 corners, clockwise from top-left) warped flat; tall crops turned."""
    points = np.array(box, dtype=np.float32).reshape(4, 2)
    width = int(max(np.linalg.norm(points[0] - points[1]), np.linalg.norm(points[2] - points[3])))
    height = int(max(np.linalg.norm(points[0] - points[3]), np.linalg.norm(points[1] - points[2])))
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(points, target)
    crop = cv2.warpPerspective(
        image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if crop.shape[0] * 1.0 / crop.shape[1] >= TALL_CROP_RATIO:
        crop = np.rot90(crop)
    return np.asarray(crop, dtype=np.uint8)


def natural_width(crop: Image) -> int:
    """The width ``crop_tensor`` scales a crop to when its batch is wider: ``ceil(48 w / h)``."""
    ratio: float = crop.shape[1] / float(crop.shape[0])
    return math.ceil(REC_HEIGHT * ratio)


def crop_tensor(crop: Image, *, width: int | None = None) -> FloatArray:
    """One crop -> [3, 48, w] FP32 in [-1, 1], unpadded; ``w`` is ``natural_width`` or ``width`` if less.

    ``width`` is the batch's width (RapidOCR: ``int(48 * the batch's widest ratio)``, at least 320).
    """
    resized_w = natural_width(crop)
    if width is not None and resized_w > width:
        resized_w = width
    resized = cv2.resize(crop, (resized_w, REC_HEIGHT)).astype(np.float32)
    # RapidOCR's arithmetic, in float32: / 255, - 0.5, / 0.5.
    scaled = (resized.transpose(2, 0, 1) if resized.ndim == 3 else resized[np.newaxis]) / 255
    scaled -= 0.5
    scaled /= 0.5
    return np.ascontiguousarray(np.broadcast_to(scaled, (3, REC_HEIGHT, resized_w)), dtype=np.float32)


def pad_to_width(tensor: FloatArray, width: int) -> FloatArray:
    """A [3, 48, w] crop tensor padded on the right with 0 to [3, 48, ``width``] (RapidOCR's padding)."""
    channels, height, current = tensor.shape
    if current > width:
        raise ValueError(f"a crop {current} wide does not fit a width of {width}")
    padded = np.zeros((channels, height, width), dtype=np.float32)
    padded[:, :, :current] = tensor
    return padded


def rapidocr_batches(crops: Sequence[Image]) -> list[tuple[list[int], FloatArray]]:
    """RapidOCR's recognition batches of one page: the crops' indices and their [n, 3, 48, W] tensor."""
    ratios = np.array([c.shape[1] / float(c.shape[0]) for c in crops])
    order = [int(i) for i in np.argsort(ratios)]
    batches = []
    for start in range(0, len(order), REC_BATCH_NUM):
        indices = order[start : start + REC_BATCH_NUM]
        widest = max(REC_MIN_WIDTH / REC_HEIGHT, *(crops[i].shape[1] / crops[i].shape[0] for i in indices))
        width = int(REC_HEIGHT * widest)
        tensor = np.stack([pad_to_width(crop_tensor(crops[i], width=width), width) for i in indices])
        batches.append((indices, tensor))
    return batches


def decode(probabilities: FloatArray, classes: Sequence[str] | None = None) -> list[tuple[str, float]]:
    """CTC greedy decoding of [N, T, C] (or one [T, C]) -> (text, mean probability of its columns)."""
    table = characters() if classes is None else classes
    rows = probabilities[np.newaxis] if probabilities.ndim == 2 else probabilities
    best, best_p = rows.argmax(axis=2), rows.max(axis=2)
    out = []
    for index, prob in zip(best, best_p, strict=True):
        keep = np.ones(len(index), dtype=bool)
        keep[1:] = index[1:] != index[:-1]
        keep &= index != 0
        kept = prob[keep].tolist() or [0]
        out.append(("".join(table[i] for i in index[keep]), float(np.mean(kept))))
    return out


def read_lines(
    boxes: npt.ArrayLike, decoded: Sequence[tuple[str, float]], *, min_score: float = TEXT_SCORE
) -> list[dict[str, Any]]:
    """The ``ocr`` answer's lines: text, score and box of each line scoring at least ``min_score``."""
    corners = np.asarray(boxes, dtype=np.float32).reshape(-1, 4, 2)
    if len(corners) != len(decoded):
        raise ValueError(f"{len(corners)} boxes but {len(decoded)} recognised crops")
    return [
        {"text": text, "score": score, "box": box.tolist()}
        for box, (text, score) in zip(corners, decoded, strict=True)
        if score >= min_score
    ]


def angle_tensor(crop: Image) -> FloatArray:
    """One crop -> the angle classifier's [3, 48, 192] input (scaled to height 48, padded with 0)."""
    channels, height, width = CLS_SHAPE
    resized_w = min(math.ceil(height * (crop.shape[1] / float(crop.shape[0]))), width)
    resized = cv2.resize(crop, (resized_w, height)).astype(np.float32)
    scaled = (resized.transpose(2, 0, 1) if resized.ndim == 3 else resized[np.newaxis]) / 255
    scaled -= 0.5
    scaled /= 0.5
    return pad_to_width(np.broadcast_to(scaled, (channels, height, resized_w)), width)


def is_upside_down(probabilities: npt.ArrayLike) -> bool:
    """The classifier's [2] output says ``180`` with more than ``CLS_THRESH``: turn the crop."""
    p = np.asarray(probabilities, dtype=np.float32).reshape(-1)
    best = int(p.argmax())
    return CLS_LABELS[best] == "180" and float(p[best]) > CLS_THRESH


def turn_upside_down(crop: Image) -> Image:
    """The crop rotated 180 degrees (``cv2.rotate(crop, 1)``, as RapidOCR turns it)."""
    return np.asarray(cv2.rotate(crop, cv2.ROTATE_180), dtype=np.uint8)
