"""The records a document is described by: ``DocumentInfo`` (from headers) and ``Page`` (decoded)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from PIL import Image

from worker.runtime.documents.blank import PageMeasure, measure_page


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """What a document is, read from its headers / page tree without decoding a pixel."""

    kind: str  # "image" | "tiff" | "pdf"
    page_count: int
    #: Per page ``(width, height)``: pixels for raster pages, points (1/72 in) for PDF pages.
    page_sizes: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Page:
    """One decoded page: upright, mode ``L`` (paper white). Its blank measure is taken when first read."""

    number: int  # 1-based
    image: Image.Image

    @functools.cached_property
    def measure(self) -> PageMeasure:
        """Its paper level and content (``documents.blank``), measured once; ~2 ms for an A4 scan."""
        return measure_page(self.image)

    @property
    def blank(self) -> bool:
        """Paper only (``PageMeasure.blank``): a package that skips blank pages does not see it."""
        return self.measure.blank
