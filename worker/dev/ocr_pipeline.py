"""The OCR packages' ops composed with plain onnxruntime sessions, and RapidOCR's own pipeline beside them.

``OpsPipeline`` is what the fleet's two OCR packages will do to a page, without the fleet: the
``text_detector`` package's ``detection`` module and the ``text_recognizer`` package's ``recognition``
module (loaded by file path, as the worker loads a handler's siblings), the PP-OCRv4 graphs run by
onnxruntime with RapidOCR's session options, and CPU time measured per stage. ``RapidOcrPipeline`` is
RapidOCR 1.4.4's ``RapidOCR`` class with its default configuration. Both read a page (a uint8 numpy
image, gray or BGR) and answer ``{"text", "score", "box"}`` lines in reading order, the ``ocr`` analysis's
shape.

The model files come from rapidocr-onnxruntime's wheel, pinned by sha256 (``MODELS``) and fetched by
``worker.runtime.model_packages.sources`` into the packages' folders (the angle classifier, which no
package uses, into the fetch cache), where the packages' ``[model.source]`` will point.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from worker.runtime.model_packages import sources
from worker.runtime.model_packages.declaration import ModelSource
from worker.runtime.model_packages.loader import BUNDLED_MODELS_DIR

RAPIDOCR_WHEEL: Final = "rapidocr-onnxruntime==1.4.4"
DETECTOR_DIR: Final = BUNDLED_MODELS_DIR / "text_detector"
RECOGNIZER_DIR: Final = BUNDLED_MODELS_DIR / "text_recognizer"

Image = npt.NDArray[np.uint8]
Line = dict[str, Any]


@dataclass(frozen=True)
class OcrModel:
    """One of RapidOCR's ONNX files: the member of its wheel, its digest, where it is fetched to."""

    name: str
    member: str
    sha256: str
    #: The package folder it belongs in; None: the fetch cache (a model no package uses).
    folder: Path | None

    @property
    def source(self) -> ModelSource:
        return ModelSource(self.sha256, wheel=RAPIDOCR_WHEEL, member=self.member)

    def path(self, cache_dir: Path | None = None) -> Path:
        file_name = Path(self.member).name
        if self.folder is not None:
            return self.folder / file_name
        return (cache_dir or sources.default_cache_dir()) / "files" / file_name


MODELS: Final = {
    "det": OcrModel(
        "text_detector",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        DETECTOR_DIR,
    ),
    "rec": OcrModel(
        "text_recognizer",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        RECOGNIZER_DIR,
    ),
    "cls": OcrModel(
        "text_angle_classifier",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        None,
    ),
}


def fetch_models(cache_dir: Path | None = None, *, into: Path | None = None) -> dict[str, Path]:
    """Fetch (or find in place) det, rec and cls, verified; their paths by key.

    By default det and rec go to their packages' folders (where ``fleet models fetch`` puts them) and cls
    to the cache; ``into`` puts all three in one folder instead (tests use a temporary one).
    """
    paths = {}
    for key, model in MODELS.items():
        path = into / Path(model.member).name if into is not None else model.path(cache_dir)
        sources.fetch(model.source, path, package=model.name, cache_dir=cache_dir)
        paths[key] = path
    return paths


def load_module(path: Path) -> ModuleType:
    """A package's sibling module imported by file path (not a package import), once per process."""
    name = f"fleet_ocr_{path.parent.name}_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def detection_ops() -> ModuleType:
    return load_module(DETECTOR_DIR / "detection.py")


def recognition_ops() -> ModuleType:
    return load_module(RECOGNIZER_DIR / "recognition.py")


def session(model: Path | bytes, *, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session with RapidOCR's options (all graph optimisations, no memory arena)."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.enable_cpu_mem_arena = False
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@dataclass
class StageClock:
    """CPU and wall milliseconds per named stage, summed over the pages a pipeline read."""

    cpu_ms: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    wall_ms: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    pages: int = 0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu_ms[name] += (time.process_time() - cpu) * 1000
            self.wall_ms[name] += (time.perf_counter() - wall) * 1000

    def per_page(self) -> dict[str, dict[str, float]]:
        pages = max(1, self.pages)
        return {
            "cpu_ms": {k: round(v / pages, 1) for k, v in self.cpu_ms.items()},
            "wall_ms": {k: round(v / pages, 1) for k, v in self.wall_ms.items()},
        }


@dataclass
class PageRead:
    """One page through ``OpsPipeline``: the answer and what the runtime will want to know about it."""

    lines: list[Line]
    #: The detector's graph input (H, W) and the recogniser's inputs' unpadded widths, one per crop.
    detection_hw: tuple[int, int]
    crop_widths: list[int]
    #: The crops as recognised (turned where the classifier said so) and each one's (text, score).
    crops: list[Image] = field(default_factory=list)
    decoded: list[tuple[str, float]] = field(default_factory=list)
    #: Raw outputs, kept only when asked (precision comparisons).
    probability_map: npt.NDArray[np.float32] | None = None
    rec_outputs: list[npt.NDArray[np.float32]] | None = None


class OpsPipeline:
    """detection.py + recognition.py around onnxruntime sessions: one page at a time, timed per stage.

    ``rec_batching``: ``"rapidocr"`` batches each page's crops as RapidOCR does (sorted by aspect ratio,
    6 at a time, padded to the widest, at least 320); a tuple of widths puts each crop alone at its
    natural width, padded to the smallest of those widths that holds it (its own width past the last),
    the way width buckets across pages would. ``use_cls`` runs the angle classifier on every crop.
    """

    def __init__(
        self,
        models: dict[str, Path | bytes],
        *,
        use_cls: bool = False,
        rec_batching: str | tuple[int, ...] = "rapidocr",
        threads: int | None = None,
        keep_raw: bool = False,
    ) -> None:
        self.det_ops, self.rec_ops = detection_ops(), recognition_ops()
        self.det = session(models["det"], threads=threads)
        self.rec = session(models["rec"], threads=threads)
        self.cls = session(models["cls"], threads=threads) if use_cls else None
        #: None: RapidOCR's batches; else the width buckets, narrowest first.
        self.buckets = None if rec_batching == "rapidocr" else tuple(sorted(int(w) for w in rec_batching))
        self.keep_raw = keep_raw
        self.clock = StageClock()

    def read(self, page: Image) -> PageRead:
        det, rec, clock = self.det_ops, self.rec_ops, self.clock
        clock.pages += 1
        with clock.stage("det_pre"):
            prepared = det.detection_input(page)
        with clock.stage("det_infer"):
            probabilities = self.det.run(None, {det.INPUT_NAME: prepared.tensor[np.newaxis]})[0]
        with clock.stage("det_post"):
            found = det.boxes_from_probabilities(probabilities[0], prepared)
        with clock.stage("crop"):
            work, frame = det.working_image(page)
            crops = [rec.crop_text(work, box) for box in frame.to_working(found.boxes)]
        if self.cls is not None and crops:
            with clock.stage("cls"):
                angles = self.cls.run(
                    None, {rec.CLS_INPUT_NAME: np.stack([rec.angle_tensor(c) for c in crops])}
                )
                crops = [
                    rec.turn_upside_down(c) if rec.is_upside_down(p) else c
                    for c, p in zip(crops, angles[0], strict=True)
                ]
        decoded, raw = self._recognise(crops)
        with clock.stage("rec_post"):
            lines = rec.read_lines(found.boxes, decoded)
        return PageRead(
            lines,
            prepared.tensor.shape[1:],
            [int(rec.natural_width(c)) for c in crops],
            crops,
            decoded,
            probabilities if self.keep_raw else None,
            raw if self.keep_raw else None,
        )

    def _recognise(self, crops: Sequence[Image]) -> tuple[list[tuple[str, float]], list[Any]]:
        rec, clock = self.rec_ops, self.clock
        decoded: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        raw: list[Any] = [None] * len(crops)
        with clock.stage("rec_pre"):
            batches = (
                rec.rapidocr_batches(crops) if self.buckets is None else self._buckets(crops, self.buckets)
            )
        for indices, tensor in batches:
            with clock.stage("rec_infer"):
                outputs = self.rec.run(None, {rec.INPUT_NAME: tensor})[0]
            with clock.stage("rec_post"):
                for i, row, answer in zip(indices, outputs, rec.decode(outputs), strict=True):
                    decoded[i], raw[i] = answer, row
        return decoded, raw

    def _buckets(
        self, crops: Sequence[Image], widths: tuple[int, ...]
    ) -> list[tuple[list[int], npt.NDArray[np.float32]]]:
        rec = self.rec_ops
        batches = []
        for i, crop in enumerate(crops):
            tensor = rec.crop_tensor(crop)
            width = next((w for w in widths if w >= tensor.shape[2]), tensor.shape[2])
            batches.append(([i], rec.pad_to_width(tensor, width)[np.newaxis]))
        return batches


class RapidOcrPipeline:
    """RapidOCR 1.4.4's own pipeline (its ``RapidOCR`` class, default config.yaml), answering like ours."""

    def __init__(self, *, use_cls: bool = True, threads: int | None = None) -> None:
        from rapidocr_onnxruntime import RapidOCR  # noqa: PLC0415 - a dev-only dependency, loaded on use

        options: dict[str, Any] = {} if threads is None else {"intra_op_num_threads": threads}
        self.engine = RapidOCR(**options)
        self.use_cls = use_cls
        #: RapidOCR's own per-stage wall seconds (det, cls, rec), summed.
        self.elapsed_s = [0.0, 0.0, 0.0]

    def read(self, page: Image) -> list[Line]:
        result, elapsed = self.engine(page, use_cls=self.use_cls)
        if not result:
            return []
        for i, seconds in enumerate(elapsed or ()):
            self.elapsed_s[i] += float(seconds)
        return [{"text": text, "score": float(score), "box": box} for box, text, score in result]
