"""The records a document is described by: ``DocumentInfo`` (from headers) and ``Page`` (decoded)."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from worker.runtime.documents.limits import BLANK_INK_FRACTION


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """What a document is, read from its headers / page tree without decoding a pixel."""

    kind: str  # "image" | "tiff" | "pdf"
    page_count: int
    #: Per page ``(width, height)``: pixels for raster pages, points (1/72 in) for PDF pages.
    page_sizes: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Page:
    """One decoded page: upright, mode ``L`` (paper white), with its measured ink."""

    number: int  # 1-based
    image: Image.Image
    #: Fraction of the page's pixels darker than ``INK_LEVEL``.
    ink: float

    @property
    def blank(self) -> bool:
        """Too little ink to hold a drawing (``ink < BLANK_INK_FRACTION``): no model needs to see it."""
        return self.ink < BLANK_INK_FRACTION
