"""OCR on generated drawings: ground-truth recall and agreement with RapidOCR's own pipeline.

The evaluation set is generated (``drawings.render_text_image``, fixed seeds, A4 at 150 dpi like the other
packages' data): drawings with the text the generator always draws, the same with ``extra_text`` (``±``,
``°``, part numbers, text turned 90 degrees), and a page of a raster PDF rendered the way the worker
renders PDFs. On each page it runs RapidOCR 1.4.4's own pipeline and the OCR packages' ops composed with
onnxruntime (``ocr_pipeline``), and reports:

- **recall**: the share of ground-truth lines read exactly: a predicted line with the same text covers at
  least half of the line's box (each predicted line answers one ground-truth line). Coverage, not IoU:
  the truth's boxes are the ink's (Pillow's ``textbbox``) while DB boxes carry a margin that grows with
  the text's height (IoU 0.33-0.8 for lines read right). ``exact`` ignores whitespace (PP-OCRv4 rarely
  emits the spaces between words: ``DRAWING NO.`` reads ``DRAWINGNO.``); ``exact_strict`` does not.
  ``unobstructed`` leaves out lines that overlap another line of text or leave the page (the generator
  sometimes draws one text over another);
- **agreement**: the share of lines (of the larger answer) on which the two pipelines give the same text
  with box IoU >= 0.9;
- per-stage CPU ms per page, the detector's input sizes, crops per page and the crops' widths (what the
  runtime's buckets must hold).

``python -m worker.dev.ocr_eval`` (``make ocr-eval``) prints the figures as one JSON document; the
angle classifier's effect, the FP16 graphs', the recogniser's answers at other padded widths than
RapidOCR's, and what it makes of drawing symbols and Japanese are separate sections (``--cls``, ``--fp16``,
``--padding``, ``script_probe``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from PIL import Image
from shapely.geometry import Polygon

from worker.dev import drawing_documents, drawings, ocr_pipeline
from worker.dev.drawings import TextLine
from worker.dev.ocr_pipeline import Line, OpsPipeline, RapidOcrPipeline
from worker.shared import stats

#: Dataset bases of the evaluation drawings (``drawings.dataset_seed``), apart from every training set:
#: the drawings as generated, and other drawings with ``extra_text``.
OCR_EVAL_SEED: Final = 29
OCR_EVAL_EXTRA_SEED: Final = 30
#: A predicted line answers a ground-truth line when it covers at least this share of the line's box.
TRUTH_MIN_COVER: Final = 0.5
#: Two pipelines agree on a line when the texts are equal and the boxes overlap at least this much.
AGREEMENT_MIN_IOU: Final = 0.9
#: ``size_px`` of the PDF page: the worker renders a PDF page's longer side at 4 x size_px (1756 px here).
PDF_SIZE_PX: Final = 439
#: Width buckets tried for recognition: each crop alone, padded to the smallest bucket that holds it.
WIDTH_BUCKETS: Final = (320, 480, 640, 960, 1280)

Page = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class EvalPage:
    """A page to read and its ground truth (boxes in this image's pixels)."""

    name: str
    image: Page
    truth: tuple[TextLine, ...]


def generated_pages(count: int, *, extra_text: bool = False, seed: int | None = None) -> list[EvalPage]:
    """``count`` drawings of the evaluation set, as the generator renders them (A4 at 150 dpi)."""
    if seed is None:
        seed = OCR_EVAL_EXTRA_SEED if extra_text else OCR_EVAL_SEED
    pages = []
    for index in range(count):
        drawing_seed = drawings.dataset_seed(index, seed=seed)
        image, label, truth = drawings.render_text_image(drawing_seed, extra_text=extra_text)
        name = f"{'extra' if extra_text else 'plain'}-{index}-{label}"
        pages.append(EvalPage(name, np.asarray(image), truth))
    return pages


def pdf_page(page: EvalPage) -> EvalPage:
    """``page`` inside a one-page raster PDF (Pillow's writer, 150 dpi), rendered as the worker renders it."""
    from worker.runtime.documents import pdf  # noqa: PLC0415 - the worker's PDF renderer

    data = drawing_documents.pdf_from_images([Image.fromarray(page.image)])
    rendered = np.asarray(pdf.render_pdf_page(data, 1, size_px=PDF_SIZE_PX))
    sy, sx = rendered.shape[0] / page.image.shape[0], rendered.shape[1] / page.image.shape[1]
    truth = tuple(_map_box(line, lambda x, y: (x * sx, y * sy)) for line in page.truth)
    return EvalPage(f"{page.name}-pdf", rendered, truth)


def rotated(page: EvalPage, quarter_turns: int) -> EvalPage:
    """The page turned counter-clockwise by 90 degrees ``quarter_turns`` times, its truth with it."""
    image = page.image
    truth = page.truth
    for _ in range(quarter_turns % 4):
        width = float(image.shape[1])

        def turn(x: float, y: float, width: float = width) -> tuple[float, float]:
            return y, width - x  # np.rot90: column x of a page `width` wide becomes row width - x

        image = np.rot90(image)
        truth = tuple(_map_box(line, turn) for line in truth)
    return EvalPage(f"{page.name}-rot{90 * (quarter_turns % 4)}", np.ascontiguousarray(image), truth)


def _map_box(line: TextLine, move: Callable[[float, float], tuple[float, float]]) -> TextLine:
    a, b, c, d = (move(x, y) for x, y in line.box)
    return TextLine(line.text, line.kind, (a, b, c, d), line.angle_deg)


# --- matching -----------------------------------------------------------------------------------------------
def _polygon(box: Any) -> Polygon:
    polygon = Polygon(np.asarray(box, dtype=float).reshape(4, 2))
    return polygon if polygon.is_valid else polygon.buffer(0)


def box_iou(a: Any, b: Any) -> float:
    """Intersection over union of two quadrilaterals (4 corners each)."""
    pa, pb = _polygon(a), _polygon(b)
    union = pa.union(pb).area
    return float(pa.intersection(pb).area / union) if union > 0 else 0.0


def coverage(predicted: Any, truth: Any) -> float:
    """The share of the ``truth`` box's area that the ``predicted`` box covers."""
    pt = _polygon(truth)
    return float(_polygon(predicted).intersection(pt).area / pt.area) if pt.area > 0 else 0.0


def pair_boxes(left: Sequence[Any], right: Sequence[Any], *, min_iou: float) -> list[tuple[int, int, float]]:
    """One-to-one pairs ``(i, j, iou)`` of boxes overlapping at least ``min_iou``, best overlaps first."""
    candidates = sorted(
        ((box_iou(a, b), i, j) for i, a in enumerate(left) for j, b in enumerate(right)), reverse=True
    )
    used_left: set[int] = set()
    used_right: set[int] = set()
    pairs = []
    for iou, i, j in candidates:
        if iou < min_iou:
            break
        if i not in used_left and j not in used_right:
            used_left.add(i)
            used_right.add(j)
            pairs.append((i, j, iou))
    return pairs


def same_text(a: str, b: str) -> bool:
    """Equal once whitespace is removed (the recogniser rarely emits spaces between words)."""
    return "".join(a.split()) == "".join(b.split())


def obstructed(truth: Sequence[TextLine], height: int, width: int) -> list[bool]:
    """Per line: does it overlap another line of text, or reach outside the page?"""
    polygons = [Polygon(line.box) for line in truth]
    flags = []
    for i, (line, polygon) in enumerate(zip(truth, polygons, strict=True)):
        outside = any(not (0 <= x <= width and 0 <= y <= height) for x, y in line.box)
        overlaps = any(i != j and polygon.intersection(other).area > 1.0 for j, other in enumerate(polygons))
        flags.append(outside or overlaps)
    return flags


@dataclass
class Tally:
    """Counts summed over pages: how many lines, how many found exactly (and their boxes' IoU)."""

    counts: Counter[str]
    iou_sum: float = 0.0

    @classmethod
    def empty(cls) -> Tally:
        return cls(Counter())

    def rate(self, found: str, total: str) -> float | None:
        return round(self.counts[found] / self.counts[total], 4) if self.counts[total] else None


def truth_pairs(lines: Sequence[Line], truth: Sequence[TextLine]) -> dict[int, int]:
    """Ground-truth index -> predicted index: one-to-one, covering >= ``TRUTH_MIN_COVER``, equal texts
    paired first (so that a line read right is not taken by a neighbour's box), then best coverage."""
    candidates = []
    for i, line in enumerate(lines):
        for j, true in enumerate(truth):
            cover = coverage(line["box"], true.box)
            if cover >= TRUTH_MIN_COVER:
                candidates.append((same_text(line["text"], true.text), cover, j, i))
    pairs: dict[int, int] = {}
    used: set[int] = set()
    for _, _, j, i in sorted(candidates, reverse=True):
        if j not in pairs and i not in used:
            pairs[j] = i
            used.add(i)
    return pairs


def score_truth(lines: Sequence[Line], page: EvalPage, tally: Tally) -> list[str]:
    """Add one page's recall counts to ``tally``; returns the ground-truth lines missed (for the log)."""
    hidden = obstructed(page.truth, *page.image.shape[:2])
    pairs = truth_pairs(lines, page.truth)
    missed = []
    for j, (line, hard) in enumerate(zip(page.truth, hidden, strict=True)):
        read = lines[pairs[j]]["text"] if j in pairs else None
        exact = read is not None and same_text(read, line.text)
        if exact:
            tally.iou_sum += box_iou(lines[pairs[j]]["box"], line.box)
        keys = ["all", f"kind:{line.kind}"] + ([] if hard else ["unobstructed"])
        for key in keys:
            tally.counts[f"{key}:truth"] += 1
            tally.counts[f"{key}:exact"] += exact
        tally.counts["all:exact_strict"] += read == line.text
        if not exact:
            missed.append(f"{line.text!r} read {read!r}" + (" (obstructed)" if hard else ""))
    return missed


def agreement(
    ours: Sequence[Line], theirs: Sequence[Line], *, min_iou: float = AGREEMENT_MIN_IOU
) -> tuple[int, int]:
    """``(agreed, lines)``: lines with equal text and IoU >= ``min_iou``, of the larger answer's count."""
    pairs = pair_boxes([x["box"] for x in ours], [x["box"] for x in theirs], min_iou=min_iou)
    agreed = sum(ours[i]["text"] == theirs[j]["text"] for i, j, _ in pairs)
    return agreed, max(len(ours), len(theirs))


def recall_report(tally: Tally) -> dict[str, Any]:
    kinds = sorted({k.split(":")[1] for k in tally.counts if k.startswith("kind:")})
    return {
        "exact": tally.rate("all:exact", "all:truth"),
        "exact_strict": tally.rate("all:exact_strict", "all:truth"),
        "unobstructed": tally.rate("unobstructed:exact", "unobstructed:truth"),
        "truth_lines": tally.counts["all:truth"],
        "unobstructed_lines": tally.counts["unobstructed:truth"],
        "mean_iou_of_exact": round(tally.iou_sum / found, 3)
        if (found := tally.counts["all:exact"])
        else None,
        "by_kind": {k: [tally.counts[f"kind:{k}:exact"], tally.counts[f"kind:{k}:truth"]] for k in kinds},
    }


def _distribution(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {}
    return {
        **{k: float(v) for k, v in stats.percentiles(values, (50, 90)).items()},
        "max": float(max(values)),
        "mean": round(statistics.fmean(values), 1),
    }


# --- the evaluation ---------------------------------------------------------------------------------------
def evaluate(
    pages: Sequence[EvalPage], models: dict[str, Path], *, log: Callable[[str], None]
) -> dict[str, Any]:
    """Both pipelines on ``pages``: recall, agreement (RapidOCR-exact batching and width buckets), costs."""
    rapid = RapidOcrPipeline()
    ops = OpsPipeline(dict(models), use_cls=True)
    bucketed = OpsPipeline(dict(models), use_cls=True, rec_batching=WIDTH_BUCKETS)
    tallies = {"rapidocr": Tally.empty(), "ops": Tally.empty()}
    agreed = {"ops": [0, 0], "ops_width_buckets": [0, 0]}
    sizes: Counter[str] = Counter()
    widths: list[int] = []
    crops: list[int] = []
    for page in pages:
        theirs = rapid.read(page.image)
        read = ops.read(page.image)
        buckets = bucketed.read(page.image)
        for name, lines in (("rapidocr", theirs), ("ops", read.lines)):
            for miss in score_truth(lines, page, tallies[name]):
                log(f"{page.name} {name} missed {miss}")
        for name, lines in (("ops", read.lines), ("ops_width_buckets", buckets.lines)):
            a, n = agreement(lines, theirs)
            agreed[name][0] += a
            agreed[name][1] += n
            if a < n:
                log(f"{page.name} {name} agrees on {a} of {n} lines with RapidOCR")
        sizes["x".join(map(str, read.detection_hw))] += 1
        widths += read.crop_widths
        crops.append(len(read.crop_widths))
    rapid_s = rapid.elapsed_s
    return {
        "pages": len(pages),
        "recall": {name: recall_report(t) for name, t in tallies.items()},
        "agreement_with_rapidocr": {
            name: {
                "agreed": a,
                "lines": n,
                "rate": round(a / n, 4) if n else None,
                "min_iou": AGREEMENT_MIN_IOU,
            }
            for name, (a, n) in agreed.items()
        },
        "ops_per_page": ops.clock.per_page(),
        "rapidocr_wall_ms_per_page": {
            stage: round(seconds * 1000 / max(1, len(pages)), 1)
            for stage, seconds in zip(("det", "cls", "rec"), rapid_s, strict=True)
        },
        "detection_input_hw": dict(sizes),
        "crops_per_page": _distribution(crops),
        "crop_widths": _distribution(widths),
        "crop_width_buckets": _bucket_counts(widths),
    }


def _bucket_counts(widths: Sequence[int]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for width in widths:
        bucket = next((w for w in WIDTH_BUCKETS if w >= width), None)
        counts[f"<={bucket}" if bucket else f">{WIDTH_BUCKETS[-1]}"] += 1
    return dict(sorted(counts.items(), key=lambda kv: int(kv[0].lstrip("<=>"))))


def cls_effect(
    pages: Sequence[EvalPage], models: dict[str, Path], *, log: Callable[[str], None]
) -> dict[str, Any]:
    """Recall with and without the angle classifier on the pages upright, turned 180 and 90 degrees."""
    with_cls = OpsPipeline(dict(models), use_cls=True)
    without = OpsPipeline(dict(models), use_cls=False)
    report: dict[str, Any] = {}
    for turns in (0, 2, 1):
        tallies = {"with_cls": Tally.empty(), "without_cls": Tally.empty()}
        changed = 0
        for page in (rotated(p, turns) for p in pages):
            a, b = with_cls.read(page.image), without.read(page.image)
            score_truth(a.lines, page, tallies["with_cls"])
            score_truth(b.lines, page, tallies["without_cls"])
            agreed, lines = agreement(a.lines, b.lines)
            changed += lines - agreed
        report[f"rot{90 * turns}"] = {
            **{name: tally.rate("all:exact", "all:truth") for name, tally in tallies.items()},
            "lines_changed_by_cls": changed,
        }
        log(f"cls rot{90 * turns}: {report[f'rot{90 * turns}']}")
    cpu = with_cls.clock.per_page()["cpu_ms"]
    report["cls_cpu_ms_per_page"] = cpu.get("cls", 0.0)
    report["pipeline_cpu_ms_per_page_with_cls"] = round(sum(cpu.values()), 1)
    return report


def fp16_effect(
    pages: Sequence[EvalPage], models: dict[str, Path], *, log: Callable[[str], None]
) -> dict[str, Any]:
    """FP16 graphs (onnxconverter-common, FP32 inputs and outputs) against FP32, per stage.

    Raw: the largest absolute difference of the detector's probability map (same input) and of the
    recogniser's probabilities (same crops: the FP32 detector's). Answers: lines with the same text and
    box IoU >= 0.9 as the FP32 answer, for det FP16, rec FP16 and both; and with the detector's nodes that
    read constants beyond FP16's range kept FP32 (``onnx_tools.fp16_graph(keep_out_of_range=True)``).
    """
    from worker.runtime.model_packages import onnx_tools  # noqa: PLC0415 - the models extra

    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter warns on every weight it rounds to FP16's range
        half = {k: onnx_tools.fp16_graph(models[k], Path(scratch) / f"{k}16.onnx") for k in ("det", "rec")}
        det_kept = onnx_tools.fp16_graph(models["det"], Path(scratch) / "det16k.onnx", keep_out_of_range=True)
        base = OpsPipeline(dict(models), use_cls=True, keep_raw=True)
        variants = {
            "det_fp16": OpsPipeline({**models, "det": half["det"]}, use_cls=True, keep_raw=True),
            "det_fp16_out_of_range_fp32": OpsPipeline(
                {**models, "det": det_kept}, use_cls=True, keep_raw=True
            ),
            "rec_fp16": OpsPipeline({**models, "rec": half["rec"]}, use_cls=True, keep_raw=True),
            "both_fp16": OpsPipeline({**models, **half}, use_cls=True, keep_raw=True),
            "both_fp16_det_out_of_range_fp32": OpsPipeline(
                {**models, "det": det_kept, "rec": half["rec"]}, use_cls=True, keep_raw=True
            ),
        }
        worst = {
            "det_probability_map": 0.0,
            "det_out_of_range_fp32_probability_map": 0.0,
            "rec_probabilities": 0.0,
        }
        answers = {name: [0, 0] for name in variants}
        chars = {"rec_fp16_characters_changed": 0}
        for page in pages:
            ref = base.read(page.image)
            for name, pipeline in variants.items():
                got = pipeline.read(page.image)
                a, n = agreement(got.lines, ref.lines)
                answers[name][0] += a
                answers[name][1] += n
                maps = {
                    "det_fp16": "det_probability_map",
                    "det_fp16_out_of_range_fp32": "det_out_of_range_fp32_probability_map",
                }
                if name in maps and got.probability_map is not None and ref.probability_map is not None:
                    diff = float(np.abs(got.probability_map - ref.probability_map).max())
                    worst[maps[name]] = max(worst[maps[name]], diff)
                if name == "rec_fp16" and got.rec_outputs and ref.rec_outputs:
                    for x, y in zip(got.rec_outputs, ref.rec_outputs, strict=True):
                        worst["rec_probabilities"] = max(
                            worst["rec_probabilities"], float(np.abs(x - y).max())
                        )
                        chars["rec_fp16_characters_changed"] += int((x.argmax(-1) != y.argmax(-1)).sum())
            log(f"fp16 {page.name}: {answers}")
        report: dict[str, Any] = {"max_abs_error": {k: round(v, 6) for k, v in worst.items()}, **chars}
        report["answers_same_as_fp32"] = {
            name: {"agreed": a, "lines": n, "rate": round(a / n, 4) if n else None}
            for name, (a, n) in answers.items()
        }
        report["cpu_ms_per_page"] = {
            name: pipeline.clock.per_page()["cpu_ms"] for name, pipeline in {"fp32": base, **variants}.items()
        }
    return report


def padding_effect(
    pages: Sequence[EvalPage], models: dict[str, Path], *, log: Callable[[str], None]
) -> dict[str, Any]:
    """Each crop recognised alone at several padded widths, against RapidOCR's batches: how many texts
    change and the largest score change. ``natural``: no padding at all; ``next64``: the smallest
    multiple of 64 that holds the crop, at least 320 (RapidOCR's narrowest batch)."""
    pipeline = OpsPipeline(dict(models), use_cls=True)
    rec = pipeline.rec_ops
    figures: dict[str, list[Any]] = {}
    for page in pages:
        read = pipeline.read(page.image)
        for crop, (text, score) in zip(read.crops, read.decoded, strict=True):
            tensor = rec.crop_tensor(crop)
            natural = int(tensor.shape[2])
            variants = {"natural": natural, "next64": max(320, -(-natural // 64) * 64)}
            variants |= {str(w): w for w in (320, 640, 1280, 2560) if w >= natural}
            for name, width in variants.items():
                output = pipeline.rec.run(
                    None, {rec.INPUT_NAME: rec.pad_to_width(tensor, width)[np.newaxis]}
                )[0]
                ((got, got_score),) = rec.decode(output)
                tally = figures.setdefault(name, [0, 0, 0.0])
                tally[0] += 1
                tally[1] += got != text
                tally[2] = max(tally[2], abs(got_score - score))
                if got != text:
                    log(f"padding {name} ({width} for {natural}): {text!r} -> {got!r}")
    return {
        name: {"crops": n, "texts_changed": changed, "max_score_change": round(worst, 4)}
        for name, (n, changed, worst) in figures.items()
    }


#: Strings a drawing may carry that the generator's font cannot draw (Ø, the multiplication sign, µ, kana),
#: by script, with a font that draws them (Debian's fonts-dejavu-core and fonts-ipafont-gothic).
PROBE_LINES: Final = {
    "symbols": (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        ("Ø12 H7", "⌀8", "4\u00d7M6", "Ra 1.6 µm", "25 ±0.1", "45°", "Φ12", "R5 MAX"),
    ),
    "japanese": (
        "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
        ("バリ取りのこと", "ねじ", "シャフト", "めっき", "図面番号", "材質 SS400", "表面処理", "注記"),
    ),
}
#: The probe's text height in pixels: the generator's dimension text at 150 dpi is 12-18 px.
PROBE_TEXT_PX: Final = 17


def script_probe(lines: Mapping[str, tuple[str, tuple[str, ...]]] = PROBE_LINES) -> dict[str, Any]:
    """Each probe string: the characters the recogniser's dictionary lacks, and what RapidOCR reads when
    the string is drawn alone on white at drawing size (skipped when the font is not installed)."""
    from PIL import ImageDraw, ImageFont  # noqa: PLC0415

    known = set(ocr_pipeline.recognition_ops().characters())
    rapid = RapidOcrPipeline()
    report: dict[str, Any] = {}
    for script, (font_path, strings) in lines.items():
        font = ImageFont.truetype(font_path, PROBE_TEXT_PX) if Path(font_path).is_file() else None
        entries = []
        for text in strings:
            entry: dict[str, Any] = {
                "text": text,
                "not_in_dictionary": "".join(sorted(set(text) - known - {" "})),
            }
            if font is not None:
                image = Image.new("L", (480, 72), 255)
                ImageDraw.Draw(image).text((24, 24), text, fill=0, font=font)
                entry["read"] = " | ".join(line["text"] for line in rapid.read(np.asarray(image)))
            entries.append(entry)
        report[script] = {
            "font": font_path if font is not None else f"not installed: {font_path}",
            "lines": entries,
        }
    kana = [c for c in known if "\u3040" <= c <= "\u30ff"]
    report["dictionary"] = {"characters": len(known) - 2, "kana": "".join(sorted(kana))}
    return report


def evaluation_set(plain: int, extra: int) -> list[EvalPage]:
    """The standard set: ``plain`` drawings, ``extra`` with extra text, and the first drawing as a PDF."""
    pages = generated_pages(plain) + generated_pages(extra, extra_text=True)
    return [*pages, pdf_page(pages[0])] if pages else pages


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--plain", type=int, default=12, help="drawings with the generator's own text")
    parser.add_argument("--extra", type=int, default=12, help="drawings with extra_text")
    parser.add_argument("--cls", type=int, default=6, help="pages for the angle classifier's study (0: skip)")
    parser.add_argument("--fp16", type=int, default=6, help="pages for the FP16 study (0: skip)")
    parser.add_argument("--padding", type=int, default=6, help="pages for the rec padding study (0: skip)")
    parser.add_argument("--no-scripts", action="store_true", help="skip the symbols / Japanese probe")
    parser.add_argument("--cache-dir", type=Path, help="the model fetch cache (default: FLEET_MODEL_CACHE)")
    parser.add_argument("--quiet", action="store_true", help="no per-page log on stderr")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    models = ocr_pipeline.fetch_models(args.cache_dir)
    pages = evaluation_set(args.plain, args.extra)
    report: dict[str, Any] = {"evaluation": evaluate(pages, models, log=log)}
    if args.cls:
        report["cls"] = cls_effect(study_pages(args.cls), models, log=log)
    if args.fp16:
        report["fp16"] = fp16_effect(pages[: args.fp16], models, log=log)
    if args.padding:
        report["rec_padding"] = padding_effect(study_pages(args.padding), models, log=log)
    if not args.no_scripts:
        report["scripts"] = script_probe()
    print(json.dumps(report, sort_keys=True, ensure_ascii=False))
    return 0


def study_pages(count: int) -> list[EvalPage]:
    """The first ``count`` evaluation drawings, half of them (rounded up) with extra text."""
    return generated_pages(count // 2) + generated_pages(count - count // 2, extra_text=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
