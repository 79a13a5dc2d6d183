"""Blank pages: paper only, measured once per page, the same whichever package decodes it, and skipped
only by the packages that skip blank pages (``[pages] blank``).

The measure's evidence runs here on a small sample of tests/runtime/blank_evidence.py's corpus (every
group, a few pages each); the full figures are that module's ``main``. The pipeline cases run two
free-size page packages (tests/runtime/model_packages/free_size.py), one skipping blank pages and one
analysing them, through the real handlers and the in-process preprocessor, with fake models.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from worker.dev.drawings import render_image
from worker.runtime import documents
from worker.runtime.documents import blank
from worker.runtime.model_packages import handlers
from worker.runtime.model_packages.declaration import PackageInvalid, read_declaration
from worker.runtime.model_packages.handlers import Preprocessed
from worker.runtime.model_packages.loader import BUNDLED_MODELS_DIR, load_packages
from worker.runtime.pipeline.core import Pipeline
from worker.runtime.pipeline.ports import Ports
from worker.runtime.pipeline.preprocessors import InlinePreprocessor
from worker.runtime.telemetry import Metrics

from . import blank_evidence
from .model_packages import free_size
from .test_multi_model import World
from .test_pipeline import SETTINGS
from .worker_fakes import FakeNotifier, FakeSource, FakeStore

# --- the measure ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> list[blank_evidence.Sample]:
    return list(blank_evidence.corpus(blank_evidence.SMALL))


def test_the_evidence_sample_is_blank_exactly_where_it_is_paper_only(
    sample: list[blank_evidence.Sample],
) -> None:
    # Given drawings, light scans, text and other pages, photos, grey and tinted sheets, pale sheets and
    # blank scans, each decoded as the drawing model decodes a page
    found = blank_evidence.figures(sample)
    print("\n" + blank_evidence.table(found))
    # Then nothing that carries something is blank: not by its paper, not by its content
    for group in blank_evidence.CARRY:
        assert found[group].blank == 0, found[group]
    # and every blank scan and every pale empty sheet is
    assert found[blank_evidence.BLANK].blank == found[blank_evidence.BLANK].pages
    assert found[blank_evidence.PALE].blank == found[blank_evidence.PALE].pages
    # with the threshold between them, nearer the blank side (a lost answer costs more than a wasted one)
    assert found[blank_evidence.BLANK].content[1] < blank.BLANK_CONTENT_FRACTION < found["light"].content[0]
    assert found["drawing"].content[0] > 5 * blank.BLANK_CONTENT_FRACTION
    # and a grey page or a dark sheet is not paper, however empty
    for group in ("grey", "tinted"):
        assert found[group].paper[1] < blank.PAPER_MIN_LEVEL and found[group].content[1] == 0.0


def test_a_page_measures_the_same_whichever_package_decodes_it() -> None:
    drawing, _ = render_image(3, "gear")
    for image in (drawing, Image.new("L", drawing.size, 250), Image.new("L", drawing.size, 128)):
        data = free_size.png(image)
        measures = {
            documents.decode_page(data, 1, documents.PageDecode(size)).measure
            for size in (48, 192, 384, 1024)
        }
        assert len(measures) == 1, measures


def test_the_measure_of_a_uniform_grey_page_is_no_content_on_paper_too_dark_to_be_blank() -> None:
    grey = documents.measure_page(Image.new("L", (877, 620), 128))
    assert grey == documents.PageMeasure(paper=128, content=0.0) and not grey.blank
    white = documents.measure_page(Image.new("L", (877, 620), 255))
    assert white == documents.PageMeasure(paper=255, content=0.0) and white.blank
    tiny = documents.measure_page(Image.new("L", (2, 1), 255))  # smaller than a run: still measured
    assert tiny.blank


# --- the declaration ---------------------------------------------------------------------------------


def test_a_package_declares_whether_it_sees_blank_pages(tmp_path: Path) -> None:
    skip = free_size.write_package(tmp_path / "a")
    analyse = free_size.write_package(tmp_path / "b", blank="analyse")
    assert read_declaration(skip).blank_pages == "skip"
    assert read_declaration(analyse).blank_pages == "analyse"
    assert read_declaration(BUNDLED_MODELS_DIR / "drawing_analyzer").blank_pages == "skip"
    wrong = free_size.write_package(tmp_path / "c", blank="always")
    with pytest.raises(PackageInvalid, match=r'pages\.blank must be "skip" or "analyse"'):
        read_declaration(wrong)


# --- the pipeline: one measure per page, each package's own policy ----------------------------------------


class DarknessModel:
    """The free-size package's graph in numpy: each page's mean."""

    def __init__(self, name: str) -> None:
        self.name, self.version = name, "1"
        self.rows = 0

    async def ready(self) -> bool:
        return True

    async def infer(self, inputs: dict[str, Any], *, interactive: bool) -> dict[str, Any]:
        pages = inputs["PAGE"]
        self.rows += len(pages)
        return {"DARKNESS": pages.mean(axis=(2, 3)).astype(np.float32)}


def counting(measured: list[str]) -> Callable[..., Preprocessed]:
    """``handlers.run_preprocess`` that records the package of every decode asked to measure the page."""

    def run(folder: str, data: bytes, params: dict[str, Any], *, measure: bool = True) -> Preprocessed:
        if measure:
            measured.append(Path(folder).name)
        return handlers.run_preprocess(folder, data, params, measure=measure)

    return run


class PagesWorld(World):
    """A pipeline serving ``skipper`` (skips blank pages, analysis ``darkness``) and ``keeper`` (analyses
    them, ``darkness_all``) over the given page images, at ``gs://inputs/in/<name>.png``."""

    def __init__(self, root: Path, pages: dict[str, Image.Image]) -> None:
        free_size.write_package(root, "skipper", "darkness")
        free_size.write_package(root, "keeper", "darkness_all", blank="analyse")
        self.catalog = load_packages(root)
        self.darkness = {p.name: DarknessModel(p.name) for p in self.catalog.packages}
        self.source, self.store, self.notifier = FakeSource(), FakeStore(), FakeNotifier()
        for name, image in pages.items():
            self.store.objects[f"in/{name}.png"] = free_size.png(image)
        self.measured: list[str] = []
        metrics = Metrics(slots=SETTINGS.pipeline_slots)
        preprocess = InlinePreprocessor(metrics=metrics, func=counting(self.measured))
        ports = Ports(
            self.source, self.store, self.store, self.catalog, self.darkness, self.notifier, preprocess
        )
        self.pipeline = Pipeline(SETTINGS, ports, metrics=metrics)


def v2(job_id: str, page: str, analyses: list[str]) -> dict[str, Any]:
    return {
        "schema_version": 2,
        "job_id": job_id,
        "input_uri": f"gs://inputs/in/{page}.png",
        "analyses": analyses,
    }


def test_a_blank_page_goes_only_to_packages_that_analyse_blank_pages(tmp_path: Path) -> None:
    # Given a white page, a grey page and a drawn page
    drawn = free_size.page((300, 200))
    world = PagesWorld(
        tmp_path / "models",
        {"white": Image.new("L", (300, 200), 255), "grey": Image.new("L", (300, 200), 128), "drawn": drawn},
    )
    both = ["darkness", "darkness_all"]
    # When jobs ask the package that skips blank pages, the one that analyses them, and both
    results = world.run(
        [
            v2("white-skip", "white", ["darkness"]),
            v2("white-keep", "white", ["darkness_all"]),
            v2("white-both", "white", both),
            v2("grey-both", "grey", both),
            v2("drawn-both", "drawn", both),
        ]
    )
    assert {r["status"] for r in results.values()} == {"succeeded"}
    page = {job_id: r["pages"][0] for job_id, r in results.items()}
    # Then the white page is blank for every job: the skipping package does not see it, the other does
    assert all(page[j]["blank"] for j in ("white-skip", "white-keep", "white-both"))
    assert page["white-skip"]["outputs"] is None and results["white-skip"]["outputs"] is None
    assert set(page["white-keep"]["outputs"]) == {"darkness_all"}
    assert set(page["white-both"]["outputs"]) == {"darkness_all"}  # darkness did not run on it
    assert results["white-both"]["analyses"] == both  # what the job ran; the page says what ran on it
    # and the grey and the drawn page are pages for both packages
    for job_id in ("grey-both", "drawn-both"):
        assert not page[job_id]["blank"] and set(page[job_id]["outputs"]) == set(both), page[job_id]
    assert page["grey-both"]["paper"] == 128 and page["grey-both"]["ink"] == 0.0
    # and each page was measured once per job, by one package's decode, whatever the job asked
    # (the first package of the job's plan that decodes pages: keeper before skipper by name)
    assert sorted(world.measured) == ["keeper"] * 4 + ["skipper"]
    assert world.darkness["skipper"].rows == 2 and world.darkness["keeper"].rows == 4


def test_a_version_1_job_measures_no_page(tmp_path: Path) -> None:
    world = PagesWorld(tmp_path / "models", {"white": Image.new("L", (300, 200), 255)})
    job = {"job_id": "v1", "input_uri": "gs://inputs/in/white.png", "analyses": ["darkness"]}
    assert world.run([job])["v1"]["status"] == "succeeded"
    # Then the page went to the model as a version 1 job always did, and no time went into a measure
    assert world.measured == [] and world.darkness["skipper"].rows == 1
