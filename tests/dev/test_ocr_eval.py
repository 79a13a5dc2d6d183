"""The OCR evaluation: matching lines to ground truth and to RapidOCR's lines, the evaluation pages, a small
run of both pipelines (RapidOCR itself on three pages), and the RapidOCR side of the OCR benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from worker.dev import ocr_bench, ocr_eval, ocr_pipeline
from worker.dev.drawings import TextLine


def square(x: float, y: float, w: float, h: float) -> tuple[tuple[float, float], ...]:
    return ((x, y), (x + w, y), (x + w, y + h), (x, y + h))


def line(text: str, box: tuple[tuple[float, float], ...]) -> dict[str, object]:
    return {"text": text, "score": 0.9, "box": [list(p) for p in box]}


def truth(text: str, box: tuple[tuple[float, float], ...], kind: str = "note") -> TextLine:
    a, b, c, d = box
    return TextLine(text, kind, (a, b, c, d))


def test_iou_and_coverage_of_quadrilaterals() -> None:
    assert ocr_eval.box_iou(square(0, 0, 10, 10), square(0, 0, 10, 10)) == 1.0
    assert ocr_eval.box_iou(square(0, 0, 10, 10), square(20, 0, 10, 10)) == 0.0
    assert ocr_eval.box_iou(square(0, 0, 10, 10), square(5, 0, 10, 10)) == pytest.approx(1 / 3)
    # a detector's box with a margin around the ink covers all of it at a low IoU
    assert ocr_eval.coverage(square(-4, -4, 18, 18), square(0, 0, 10, 10)) == 1.0
    assert ocr_eval.box_iou(square(-4, -4, 18, 18), square(0, 0, 10, 10)) < 0.35


def test_recall_pairs_equal_texts_first_and_each_prediction_once() -> None:
    # Given two ground-truth lines side by side and one wide box that covers both, read as the second
    page = ocr_eval.EvalPage(
        "p",
        np.full((100, 200), 255, np.uint8),
        (truth("DATE", square(10, 10, 30, 10)), truth("1:1", square(45, 10, 20, 10))),
    )
    tally = ocr_eval.Tally.empty()
    missed = ocr_eval.score_truth([line("1:1", square(5, 5, 65, 20))], page, tally)
    # then only the line whose text it read counts, once
    assert ocr_eval.truth_pairs([line("1:1", square(5, 5, 65, 20))], page.truth) == {1: 0}
    assert (tally.counts["all:exact"], tally.counts["all:truth"]) == (1, 2)
    assert missed == ["'DATE' read None"]
    # and spaces do not count, unless strict
    assert ocr_eval.same_text("DRAWING NO.", "DRAWINGNO.") and not ocr_eval.same_text("S355J2", "S365J2")
    report = ocr_eval.recall_report(tally)
    assert report["exact"] == 0.5 and report["by_kind"] == {"note": [1, 2]}


def test_lines_that_overlap_or_leave_the_page_are_obstructed() -> None:
    lines = (
        truth("A", square(10, 10, 30, 10)),
        truth("B", square(35, 12, 30, 10)),  # overlaps A
        truth("C", square(100, 50, 20, 10)),
        truth("D", square(190, 50, 20, 10)),  # past the right edge of a 200 px page
    )
    assert ocr_eval.obstructed(lines, 100, 200) == [True, True, False, True]


def test_agreement_needs_equal_text_and_iou_09() -> None:
    ours = [
        line("A", square(0, 0, 100, 10)),
        line("B", square(0, 20, 100, 10)),
        line("C", square(0, 40, 100, 10)),
    ]
    theirs = [
        line("A", square(1, 0, 100, 10)),
        line("b", square(0, 20, 100, 10)),
        line("C", square(30, 40, 100, 10)),
    ]
    assert ocr_eval.agreement(ours, theirs) == (1, 3)  # B differs in text, C in place
    assert ocr_eval.agreement(ours, ours[:2]) == (2, 3)  # a line only one side has counts against


@pytest.fixture(scope="module")
def pages() -> list[ocr_eval.EvalPage]:
    return ocr_eval.evaluation_set(1, 1)


def _ink(image: np.ndarray, box: tuple[tuple[float, float], ...]) -> float:
    mask = Image.new("1", (image.shape[1], image.shape[0]), 0)
    ImageDraw.Draw(mask).polygon(list(box), fill=1)
    inside = np.asarray(mask, dtype=bool)
    return float((image[inside] < 128).mean())


def test_the_evaluation_set_pdf_and_rotated_pages_keep_their_truth_on_the_ink(
    pages: list[ocr_eval.EvalPage],
) -> None:
    plain, extra, pdf = pages
    assert plain.image.shape == (1240, 1754) and plain.name.startswith("plain-0")
    assert any(t.angle_deg == 90 for t in extra.truth)
    # The PDF page is rendered the way the worker renders it (longer side 4 x 439 px)
    assert pdf.image.shape[1] == 4 * ocr_eval.PDF_SIZE_PX and len(pdf.truth) == len(plain.truth)
    for page in (plain, extra, pdf, ocr_eval.rotated(extra, 1), ocr_eval.rotated(plain, 2)):
        assert min(_ink(page.image, t.box) for t in page.truth) > 0.05, page.name
    # and four quarter turns are the page itself
    turned = ocr_eval.rotated(extra, 4)
    assert np.array_equal(turned.image, extra.image)
    assert all(np.allclose(a.box, b.box) for a, b in zip(turned.truth, extra.truth, strict=True))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return ocr_pipeline.fetch_models(into=tmp_path_factory.mktemp("ocr-models"))


@pytest.mark.slow
def test_a_small_evaluation_agrees_with_rapidocr_and_reports_its_figures(
    pages: list[ocr_eval.EvalPage], models: dict[str, Path]
) -> None:
    logged: list[str] = []
    report = ocr_eval.evaluate(pages, models, log=logged.append)
    assert report["pages"] == 3
    # The composition with RapidOCR's batches answers RapidOCR's answer; with width buckets (a crop
    # padded to another width than RapidOCR's batch gives it) nearly so, and the report says how nearly
    agreement = report["agreement_with_rapidocr"]
    assert agreement["ops"]["rate"] == 1.0, logged
    assert 0.9 <= agreement["ops_width_buckets"]["rate"] <= 1.0, logged
    # both read most lines of the ground truth exactly, and the same ones
    assert report["recall"]["ops"] == report["recall"]["rapidocr"]
    assert report["recall"]["ops"]["exact"] > 0.6
    assert set(report["ops_per_page"]["cpu_ms"]) >= {
        "det_pre",
        "det_infer",
        "det_post",
        "crop",
        "cls",
        "rec_infer",
    }
    assert report["detection_input_hw"] == {"1248x1760": 3}  # A4 at 150 dpi, and the PDF page at 1756 px
    assert 0 < report["crop_widths"]["p50"] <= report["crop_widths"]["max"]


@pytest.mark.slow
def test_the_rapidocr_bench_reports_both_layouts(pages: list[ocr_eval.EvalPage]) -> None:
    small = [page.image[900:1240, 900:1754] for page in pages[:2]]  # the title blocks: quick to read
    figures = ocr_bench.bench_rapidocr(small, process_count=2)
    layouts = figures["rapidocr"]
    assert set(layouts) == {"one_process", "processes"} and figures["best"] in layouts
    assert layouts["processes"]["processes"] == 2 and layouts["processes"]["threads_per_process"] == 1
    for layout in layouts.values():
        assert layout["pages"] == 2 and layout["pages_per_s"] > 0
        assert 0 < layout["latency_ms"]["p50"] <= layout["latency_ms"]["p99"]


@pytest.mark.slow
def test_the_script_probe_names_characters_the_dictionary_lacks() -> None:
    dejavu = ocr_eval.PROBE_LINES["symbols"][0]
    report = ocr_eval.script_probe(
        {"symbols": (dejavu, ("Ø12", "25 ±0.1")), "japanese": ("/nonexistent/font.ttf", ("ねじ",))}
    )
    diameter, tolerance = report["symbols"]["lines"]
    assert (diameter["not_in_dictionary"], tolerance["not_in_dictionary"]) == ("Ø", "")
    if Path(dejavu).is_file():  # Debian's fonts-dejavu-core: the recogniser reads the Ø as a zero
        assert diameter["read"] == "012" and tolerance["read"].replace(" ", "") == "25±0.1"
    assert report["japanese"]["font"].startswith("not installed")
    assert report["japanese"]["lines"] == [{"text": "ねじ", "not_in_dictionary": "じね"}]
    assert report["dictionary"] == {"characters": 6623, "kana": "のサシジマ"}


@pytest.mark.slow
def test_padding_every_crop_to_320_is_rapidocrs_answer_on_a_page_of_narrow_crops(
    pages: list[ocr_eval.EvalPage], models: dict[str, Path]
) -> None:
    # Given a page whose crops are all at most 320 wide: RapidOCR pads each of its batches to 320
    plain = pages[0]
    assert max(ocr_pipeline.OpsPipeline(dict(models), use_cls=True).read(plain.image).crop_widths) <= 320
    # When each crop is recognised alone at several widths, then at 320 every answer is RapidOCR's
    figures = ocr_eval.padding_effect([plain], models, log=lambda _: None)
    assert figures["320"]["crops"] > 5 and figures["320"]["texts_changed"] == 0
    assert figures["320"]["max_score_change"] == 0.0
    assert set(figures) >= {"natural", "next64", "640", "1280", "2560"}
