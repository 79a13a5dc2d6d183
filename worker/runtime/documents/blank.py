"""The blank-page measure: is a page paper only? One measure for every package, whatever its page size.

A page is blank when its paper is light and almost nothing on it is drawn:

- The page is looked at in a canonical view: reduced (area average) so its longer side is
  ``MEASURE_SIDE_PX``. Averaging removes scanner grain, and the view is the same grid whichever package
  decoded the page: for PNG, TIFF, GIF, BMP and WEBP pages the decoded pixels, hence the measure, are
  identical for every package; a JPEG (decoded at the package's DCT scale) or a PDF page (rendered at 4 x
  the package's size) differs a little between packages (figures below).
- ``paper``: the page's paper level, the ``PAPER_QUANTILE`` quantile of the view (a drawing is mostly
  paper). A page whose paper is darker than ``PAPER_MIN_LEVEL`` is never blank: a uniform grey page, a
  coloured sheet, a photo.
- ``content``: the fraction of the view's cells that are marks — darker by more than ``CONTENT_CONTRAST``
  than the paper around them (the ``LOCAL_PAPER_QUANTILE`` quantile of their ``LOCAL_PAPER_BLOCK_PX``
  block, so a lighting gradient is paper) — and lie on a line: ``RUN_CELLS`` such cells in a row or a
  column. Specks and grain are dots; drawings, text and tables are lines, even scanned light.

Evidence (``python tests/runtime/blank_evidence.py``; tests/runtime/test_blank_pages.py asserts it on a
smaller sample): A4 pages at 150 dpi, PNG and JPEG, measured as the drawing model decodes them (192 px):

========================================================  =========  ===============  =====
pages                                                     paper      content          blank
========================================================  =========  ===============  =====
120 held-out generator drawings (6 classes)               231-254    0.0333-0.0537    0
24 light scans of drawings (contrast x 0.12-0.40: darkest
lines ~28-94 levels below the paper)                      247-255    0.0034-0.0386    0
36 other pages: text, tables, title blocks, scribbles,
graph paper, charts, barcodes, fragments, noise           134-255    0.0000-0.5756    0
20 photo-like pages                                       148-199    0.0048-0.1851    0
5 uniform grey sheets (96-192), 7 dark tinted or grained  96-192     0                0
5 pale sheets (pink, blue, yellow, green, lilac)          209-234    0                5
230 blank scans (paper tone, lighting gradient, grain,
20-300 specks, some page numbers; 30 through a PDF)       224-255    0.0000-0.0018    230
========================================================  =========  ===============  =====

The same pages decoded for 192, 384 and 1024 px packages: content differs by at most 0.0015 (a JPEG
drawing), 0.0031 (a light scan) and 0.0003 (a blank JPEG), and no page's blank decision changes.
``BLANK_CONTENT_FRACTION`` = 0.003 sits 1.7 x above the dirtiest blank scan and just under the faintest
light scan, 11 x under every drawing: skipping a page that had something on it is the costly mistake
(its answer is lost), analysing a dirty blank page the cheap one. Pale sheets are paper: the measure
sees the page as the models do, in grayscale, where a pastel sheet is as light as a cream one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from PIL import Image

#: The canonical view's longer side, pixels: an A4 150-dpi scan is reduced ~4.6 x, which averages
#: scanner grain away while a 1-px line still darkens its cell by ~50 levels.
MEASURE_SIDE_PX: Final = 384
#: The paper level is this quantile of the view: under 10 % of a drawing is ink.
PAPER_QUANTILE: Final = 0.9
#: Paper darker than this (0 black .. 255 white) is not paper: such a page is never blank. Blank scans
#: measure >= 224, grey and dark sheets <= 192, photo-like pages <= 199.
PAPER_MIN_LEVEL: Final = 200
#: The paper around a cell: this quantile of its block of ``LOCAL_PAPER_BLOCK_PX`` x that many cells
#: (a lighting gradient of up to 25 levels across the page moves it by ~1 level a block).
LOCAL_PAPER_BLOCK_PX: Final = 16
LOCAL_PAPER_QUANTILE: Final = 0.75
#: A mark is darker than the paper around it by more than this many levels (grain in the view: ~2).
CONTENT_CONTRAST: Final = 16
#: A mark counts as content when it lies on a line of at least this many cells, across or down.
RUN_CELLS: Final = 3
#: A page whose paper is light and whose content is below this fraction of the view is blank.
BLANK_CONTENT_FRACTION: Final = 0.003


@dataclass(frozen=True, slots=True)
class PageMeasure:
    """What a page carries: its paper level (0-255) and the fraction of its view that is content."""

    paper: int
    content: float

    @property
    def blank(self) -> bool:
        """Paper only: light paper and (almost) no line on it. No model that skips blank pages sees it."""
        return self.paper >= PAPER_MIN_LEVEL and self.content < BLANK_CONTENT_FRACTION


def measure_page(image: Image.Image) -> PageMeasure:
    """The measure of a decoded page (any mode; ``L`` as the worker decodes it): ~1.2 ms of CPU for an A4
    150-dpi page (the ink histogram before it took 0.9 ms)."""
    view = _view(image if image.mode == "L" else image.convert("L"))
    cells = np.asarray(view, dtype=np.int16)
    marks = (_local_paper(cells) - cells) > CONTENT_CONTRAST
    content = round(float(_on_lines(marks).mean()), 6)
    return PageMeasure(paper=_quantile(view.histogram(), PAPER_QUANTILE), content=content)


def _quantile(histogram: list[int], quantile: float) -> int:
    """The level below which ``quantile`` of the pixels lie (the sorted pixels' element at that rank)."""
    rank = round(quantile * (sum(histogram) - 1))
    seen = 0
    for level, count in enumerate(histogram):
        seen += count
        if seen > rank:
            return level
    return len(histogram) - 1


def _view(image: Image.Image) -> Image.Image:
    """The page reduced by area averaging so its longer side is ``MEASURE_SIDE_PX`` (never enlarged)."""
    width, height = image.size
    scale = MEASURE_SIDE_PX / max(width, height)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # reducing_gap 1: an integer box reduction first (Pillow's fast reduce), then a box resize of < 2 x
    return image.resize(size, Image.Resampling.BOX, reducing_gap=1.0)


def _local_paper(cells: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Each cell's paper: the ``LOCAL_PAPER_QUANTILE`` quantile of its block (edge blocks padded)."""
    block = LOCAL_PAPER_BLOCK_PX
    height, width = cells.shape
    rows, cols = -(-height // block), -(-width // block)
    padded = np.pad(cells, ((0, rows * block - height), (0, cols * block - width)), mode="edge")
    blocks = padded.reshape(rows, block, cols, block).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    at = round(LOCAL_PAPER_QUANTILE * (block * block - 1))
    paper = np.partition(blocks, at, axis=2)[:, :, at]
    return np.repeat(np.repeat(paper, block, axis=0), block, axis=1)[:height, :width]


def _on_lines(marks: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The marks that are the middle of ``RUN_CELLS`` marks in a row or in a column."""
    reach = RUN_CELLS // 2
    across = np.zeros_like(marks)
    down = np.zeros_like(marks)
    if marks.shape[1] > 2 * reach:
        across[:, reach:-reach] = np.logical_and.reduce(
            [marks[:, i : marks.shape[1] - 2 * reach + i] for i in range(RUN_CELLS)]
        )
    if marks.shape[0] > 2 * reach:
        down[reach:-reach, :] = np.logical_and.reduce(
            [marks[i : marks.shape[0] - 2 * reach + i, :] for i in range(RUN_CELLS)]
        )
    return across | down
