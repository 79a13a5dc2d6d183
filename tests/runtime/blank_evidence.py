"""The evidence behind the blank-page measure (worker/runtime/documents/blank.py): pages that carry
something — generator drawings, light scans of them, text, tables, charts, photos, grey and tinted
sheets — and blank scans, each decoded as a package decodes it and measured.

``corpus(...)`` builds the pages (deterministic: seeded); ``figures(...)`` measures them per group;
tests/runtime/test_blank_pages.py runs a small sample. The full figures quoted next to the constants and
in docs/security.md come from::

    .venv/bin/python tests/runtime/blank_evidence.py          # ~2 min on the 2-core development machine
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

if __name__ == "__main__":  # run as a script: the checkout's worker package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from worker.dev import drawing_documents, drawings
from worker.runtime import documents
from worker.runtime.documents.blank import PageMeasure

#: Groups whose pages carry something: never blank.
CARRY = ("drawing", "light", "content", "photo", "grey", "tinted")
#: Pale sheets: paper in grayscale (the measure sees what the models see), blank when empty.
PALE = "pale"
BLANK = "blank"
#: Sheets of a colour or grey darker than paper, and pale ones, as RGB (decoded to grayscale).
DARK_TINTS = ((150, 150, 200), (210, 180, 140), (120, 160, 120), (200, 120, 120))
PALE_TINTS = ((255, 200, 200), (200, 220, 255), (255, 240, 150), (180, 230, 180), (230, 200, 255))
GREYS = (96, 128, 160, 176, 192)
OTHER_KINDS = ("text", "table", "title_block", "scribble", "graph_paper", "chart", "barcode", "crop", "noise")
#: The sizes the bundled packages decode pages at (drawing model, symbol model) and the default.
PACKAGE_SIZES_PX = (192, 384, 1024)


@dataclass(frozen=True)
class Sample:
    """One page of the corpus: its group, a name, and the document's bytes."""

    group: str
    name: str
    data: bytes


@dataclass(frozen=True)
class Counts:
    """How many pages of each generated group ``corpus`` makes."""

    drawings: int = 120
    light: int = 24
    other_per_kind: int = 4
    photos: int = 20
    blank: int = 200
    blank_pdf: int = 30


#: The sample tests/runtime/test_blank_pages.py measures: every group, a few pages each (~10 s of CPU).
SMALL = Counts(drawings=6, light=4, other_per_kind=1, photos=2, blank=12, blank_pdf=3)


def _encode(image: Image.Image, fmt: str, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, "PNG", compress_level=1)
    else:
        image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def light_scan(image: Image.Image, contrast: float) -> Image.Image:
    """The page scanned light: every level's distance from white times ``contrast``."""
    pixels = np.asarray(image.convert("L"), dtype=np.float32)
    return Image.fromarray(np.clip(255.0 - (255.0 - pixels) * contrast, 0, 255).astype(np.uint8))


def grained(level: int, amplitude: int, seed: int) -> Image.Image:
    """A uniform sheet of ``level`` with uniform grain of +-``amplitude``."""
    width, height = drawings.DEFAULT_SIZE
    noise = np.random.default_rng(seed).integers(-amplitude, amplitude + 1, size=(height, width))
    return Image.fromarray(np.clip(level + noise, 0, 255).astype(np.uint8))


def corpus(counts: Counts = Counts()) -> Iterator[Sample]:
    """Every page of the evidence, in a fixed order (A4 at 150 dpi; PNG, JPEG and PDF)."""
    size = drawings.DEFAULT_SIZE
    for i, (data, label) in enumerate(
        drawings.dataset(counts.drawings, seed=drawings.HELDOUT_SEED, fmt="mixed")
    ):
        yield Sample("drawing", f"{label}-{i}", data)
    for i in range(counts.light):
        image, label = drawings.render_image(drawings.dataset_seed(i, seed=28))
        contrast = 0.12 + 0.28 * i / max(1, counts.light - 1)  # darkest lines ~28 to ~94 below paper
        scan = light_scan(image, contrast)
        yield Sample(
            "light", f"{label}-x{contrast:.2f}", _encode(scan, "png" if i % 2 else "jpeg", 70 + i % 26)
        )
    for kind in OTHER_KINDS:
        for i in range(counts.other_per_kind):
            data, _ = drawings.render_negative(drawings.dataset_seed(i, seed=30), kind)
            yield Sample("content", f"{kind}-{i}", data)
    for i in range(counts.photos):
        data, _ = drawings.render_negative(
            drawings.dataset_seed(i, seed=29), "photo", fmt="jpeg" if i % 2 else "png"
        )
        yield Sample("photo", f"photo-{i}", data)
    for level in GREYS:
        yield Sample("grey", f"grey-{level}", _encode(Image.new("L", size, level), "png"))
    for i, colour in enumerate(DARK_TINTS):
        yield Sample(
            "tinted", f"tint-{colour}", _encode(Image.new("RGB", size, colour), "jpeg" if i % 2 else "png")
        )
    for i, level in enumerate((140, 170, 190)):
        yield Sample("tinted", f"grained-{level}", _encode(grained(level, 10, i), "png"))
    for i, colour in enumerate(PALE_TINTS):
        yield Sample(
            PALE, f"pale-{colour}", _encode(Image.new("RGB", size, colour), "jpeg" if i % 2 else "png")
        )
    for i in range(counts.blank):
        fmt: drawings.Format = "jpeg" if i % 3 == 2 else "png"
        data, _ = drawings.render_negative(drawings.dataset_seed(i, seed=27), "blank", fmt=fmt)
        yield Sample(BLANK, f"blank-{i}-{fmt}", data)
    for i in range(counts.blank_pdf):
        image, _ = drawings.render_negative_image(drawings.dataset_seed(1000 + i, seed=27), "blank")
        yield Sample(BLANK, f"blank-pdf-{i}", drawing_documents.pdf_from_images([image]))


def measure(sample: Sample, size_px: int) -> PageMeasure:
    """The page measured as a package of page size ``size_px`` decodes it."""
    return documents.decode_page(sample.data, 1, documents.PageDecode(size_px)).measure


@dataclass(frozen=True)
class GroupFigures:
    """One group's range of paper and content, with the pages at its extremes."""

    group: str
    pages: int
    paper: tuple[int, int]
    content: tuple[float, float]
    least: str
    most: str
    blank: int


def figures(samples: list[Sample], size_px: int = 192) -> dict[str, GroupFigures]:
    """Per group: its pages' paper and content ranges, and how many measure blank."""
    measured: dict[str, list[tuple[PageMeasure, str]]] = {}
    for sample in samples:
        measured.setdefault(sample.group, []).append((measure(sample, size_px), sample.name))
    out = {}
    for group, pages in measured.items():
        by_content = sorted(pages, key=lambda p: p[0].content)
        papers = [m.paper for m, _ in pages]
        out[group] = GroupFigures(
            group,
            len(pages),
            (min(papers), max(papers)),
            (by_content[0][0].content, by_content[-1][0].content),
            by_content[0][1],
            by_content[-1][1],
            sum(m.blank for m, _ in pages),
        )
    return out


def across_packages(samples: list[Sample]) -> tuple[float, str, list[str]]:
    """Each page decoded for every bundled page size: the largest content difference between its decodes
    (and the page), and the pages whose blank decision differs between them."""
    worst, name, differ = 0.0, "", []
    for sample in samples:
        measures = [measure(sample, size) for size in PACKAGE_SIZES_PX]
        spread = max(m.content for m in measures) - min(m.content for m in measures)
        if spread > worst:
            worst, name = spread, sample.name
        if len({m.blank for m in measures}) > 1:
            differ.append(sample.name)
    return worst, name, differ


def table(found: dict[str, GroupFigures]) -> str:
    lines = [f"{'group':9} {'pages':>5} {'paper':>9} {'content':>17} {'blank':>5}  least / most content"]
    for f in found.values():
        lines.append(
            f"{f.group:9} {f.pages:5d} {f.paper[0]:4d}-{f.paper[1]:<4d} "
            f"{f.content[0]:.4f} - {f.content[1]:.4f} {f.blank:5d}  {f.least} / {f.most}"
        )
    return "\n".join(lines)


def main() -> int:
    samples = list(corpus())
    print(table(figures(samples)))
    for group in ("drawing", "light", BLANK):
        spread, name, differ = across_packages([s for s in samples if s.group == group])
        print(
            f"{group}: largest content difference between decodes at {PACKAGE_SIZES_PX} px {spread:.4f} "
            f"({name}); blank decision differs for {len(differ)} {differ[:5]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
