"""The records a document is described by: ``DocumentInfo`` (from headers), ``PageDecode`` (how a package
has its pages decoded), ``Frame`` (the page's own coordinates) and ``Page`` (decoded)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Final

from PIL import Image

from worker.runtime.documents.blank import PageMeasure, measure_page
from worker.runtime.documents.limits import MAX_RENDER_SIDE_PX, RENDER_OVERSAMPLE

#: ``Frame.unit`` of a raster page: the image file's own pixels.
PIXELS: Final = "px"
#: ``Frame.unit`` of a PDF page: PDF points (1/72 in).
POINTS: Final = "pt"
#: Points per inch (PDF user space).
POINTS_PER_INCH: Final = 72.0


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """What a document is, read from its headers / page tree without decoding a pixel."""

    kind: str  # "image" | "tiff" | "pdf"
    page_count: int
    #: Per page ``(width, height)``: pixels for raster pages, points (1/72 in) for PDF pages (its visible
    #: box, rotation applied: as ``Frame``).
    page_sizes: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class PageDecode:
    """How one package has a document's pages decoded (its ``[pages]`` declaration, docs/models.md).

    - ``size_px``: the size the package works at. A JPEG is decoded reduced by DCT scaling while both
      sides stay at least this; a PDF page renders with its longer side ``RENDER_OVERSAMPLE x size_px``
      pixels unless ``pdf_dpi`` is given.
    - ``pdf_dpi``: a PDF page renders at this resolution instead (a page of W x H points is W x dpi / 72
      by H x dpi / 72 pixels), never past ``MAX_RENDER_SIDE_PX`` on its longer side.
    - ``max_side_px``: the longest side a decoded page may have. A raster page over it is reduced by the
      smallest whole factor that brings it within (Pillow's ``reduce``, an area average; a JPEG's DCT
      scaling does part of it), a PDF page renders no larger.

    Whatever the decode, the page's ``Frame`` is the file's: the handler maps its pixels with ``Page.scale``.
    """

    size_px: int
    pdf_dpi: float | None = None
    max_side_px: int | None = None

    def pdf_scale(self, width_pt: float, height_pt: float) -> float:
        """Rendered pixels per point for a PDF page of this size (its visible box, rotation applied)."""
        longer = max(width_pt, height_pt)
        if self.pdf_dpi is None:
            scale = RENDER_OVERSAMPLE * self.size_px / longer
        else:
            scale = min(self.pdf_dpi / POINTS_PER_INCH, MAX_RENDER_SIDE_PX / longer)
        if self.max_side_px is not None:
            scale = min(scale, self.max_side_px / longer)
        return scale

    def pdf_pixels(self, width_pt: float, height_pt: float) -> int:
        """How many pixels the render of a PDF page of this size has."""
        if self.pdf_dpi is None and self.max_side_px is None:
            # the longer side is exactly RENDER_OVERSAMPLE x size_px (the scale's float error aside)
            longer = RENDER_OVERSAMPLE * self.size_px
            shorter = longer * min(width_pt, height_pt) / max(width_pt, height_pt)
            return longer * max(1, math.ceil(shorter))
        scale = self.pdf_scale(width_pt, height_pt)
        return max(1, math.ceil(width_pt * scale)) * max(1, math.ceil(height_pt * scale))

    def raster_factor(self, width: int, height: int) -> int:
        """The whole factor a raster page of this size is reduced by (1: decoded at full size)."""
        if self.max_side_px is None:
            return 1
        return max(1, math.ceil(max(width, height) / self.max_side_px))

    def raster_pixels(self, width: float, height: float) -> int:
        """How many pixels the decode of a raster page of this size holds at most (JPEG DCT scaling,
        which can only make it smaller, aside)."""
        factor = self.raster_factor(round(width), round(height))
        return math.ceil(width / factor) * math.ceil(height / factor)


@dataclass(frozen=True, slots=True)
class Frame:
    """A page's own coordinates: ``width`` x ``height`` in ``unit``, origin at the top left, x right, y down.

    A raster page (PNG, JPEG, TIFF, ...): the image file's pixels, upright (EXIF orientation applied),
    whatever size the page was decoded at. A PDF page: points (1/72 in) of its visible box (CropBox,
    else MediaBox) with the page's rotation (``/Rotate``) applied, as a viewer shows it.
    """

    width: float
    height: float
    unit: str  # PIXELS | POINTS

    def to_json(self) -> dict[str, Any]:
        """The result's ``pages[].frame`` (whole pixels, points to 0.01)."""
        if self.unit == PIXELS:
            return {"width": round(self.width), "height": round(self.height), "unit": self.unit}
        return {"width": round(self.width, 2), "height": round(self.height, 2), "unit": self.unit}


@dataclass(frozen=True)
class Page:
    """One decoded page: upright, mode ``L`` (paper white), in its ``frame``. Its blank measure is taken when
    first read.

    ``image`` may be smaller (or, for a PDF, larger) than the frame: ``scale`` maps its pixels to the frame
    (``x_frame = x_px * scale[0]``, ``y_frame = y_px * scale[1]``), so a handler answers in the page's own
    frame whatever size the page was decoded at. Without a ``frame`` the page is its image's pixels.
    """

    number: int  # 1-based
    image: Image.Image
    frame: Frame = None  # type: ignore[assignment]  # None: the image's own pixels (set after init)

    def __post_init__(self) -> None:
        if self.frame is None:
            object.__setattr__(self, "frame", Frame(self.image.width, self.image.height, PIXELS))

    @property
    def scale(self) -> tuple[float, float]:
        """Frame units per decoded pixel, (x, y): the frame's extent over the image's."""
        return self.frame.width / self.image.width, self.frame.height / self.image.height

    @functools.cached_property
    def measure(self) -> PageMeasure:
        """Its paper level and content (``documents.blank``), measured once; ~2 ms for an A4 scan."""
        return measure_page(self.image)

    @property
    def blank(self) -> bool:
        """Paper only (``PageMeasure.blank``): a package that skips blank pages does not see it."""
        return self.measure.blank
