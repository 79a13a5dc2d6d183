"""Documents: an input of one or more pages (an image, a multi-page TIFF, a PDF) -> the pages a job analyses.

The worker's pool probes a document (``probe``: page count and page sizes from headers / the page tree,
no pixel decoded, every bound checked), picks the pages to analyse (``select_pages``: the job's ``pages``
or every page, the page-count and pixel budgets) and decodes them one by one as a package asks
(``decode_page`` with its ``PageDecode``: a mode ``L`` page in its ``Frame``, the file's own pixels or the
PDF page's points, whose ``measure``, its paper level and content, says whether it is blank; ``blank``).
``may_have_pages`` is the cheap magic-bytes test the main process may run. Every bad document is a typed
permanent error (worker.shared.errors); the limits and their reasons are in ``limits`` and
docs/security.md "Input documents".

    >>> info = probe(data)
    >>> for number in select_pages(info, job.pages, decodes=[PageDecode(192)]):
    ...     page = decode_page(data, number, PageDecode(192))

PDF pages go through PDFium, which is not thread-safe: call ``probe``/``decode_page`` on PDFs from one
thread per process (the preprocess pool's processes run one task at a time).
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.runtime.documents import images
from worker.runtime.documents.blank import BLANK_CONTENT_FRACTION, PageMeasure, measure_page
from worker.runtime.documents.limits import (
    MAX_DOCUMENT_PAGES,
    MAX_DOCUMENT_PIXELS,
    MAX_PAGES_PER_JOB,
    MAX_PDF_INFLATED_BYTES,
    MAX_PDF_PAGE_POINTS,
    MAX_RENDER_SIDE_PX,
    RENDER_OVERSAMPLE,
)
from worker.runtime.documents.pdf import is_pdf, probe_pdf, render_page
from worker.runtime.documents.raster import decode_raster, is_tiff, probe_raster
from worker.runtime.documents.records import PIXELS, POINTS, DocumentInfo, Frame, Page, PageDecode
from worker.shared.errors import (
    DocumentTooLarge,
    InvalidPages,
    PageNotFound,
    TooManyPages,
)

__all__ = [
    "BLANK_CONTENT_FRACTION",
    "MAX_DOCUMENT_PAGES",
    "MAX_DOCUMENT_PIXELS",
    "MAX_PAGES_PER_JOB",
    "MAX_PDF_INFLATED_BYTES",
    "MAX_PDF_PAGE_POINTS",
    "MAX_RENDER_SIDE_PX",
    "PIXELS",
    "POINTS",
    "RENDER_OVERSAMPLE",
    "DocumentInfo",
    "Frame",
    "Page",
    "PageDecode",
    "PageMeasure",
    "decode_page",
    "may_have_pages",
    "measure_page",
    "probe",
    "select_pages",
]


def may_have_pages(data: bytes) -> bool:
    """Whether the bytes may hold more than one page (TIFF or PDF magic); reads no more than 1 KB."""
    return is_tiff(data) or is_pdf(data)


def probe(data: bytes) -> DocumentInfo:
    """Kind, page count and page sizes; raises the document's typed error. No pixel is decoded."""
    _check_bytes(data)
    return probe_pdf(data) if is_pdf(data) else probe_raster(data)


def select_pages(
    info: DocumentInfo, requested: Sequence[int] | None, *, decodes: Sequence[PageDecode]
) -> tuple[int, ...]:
    """The 1-based page numbers to analyse, ascending: ``requested`` or every page, within the budgets.

    ``PAGE_NOT_FOUND`` for a number past the page count, ``TOO_MANY_PAGES`` for more than
    ``MAX_PAGES_PER_JOB``, ``DOCUMENT_TOO_LARGE`` when decoding them would make more than
    ``MAX_DOCUMENT_PIXELS`` pixels: each page counts at the largest of ``decodes`` (the job's packages'),
    raster pages at their size within ``max_side_px``, PDF pages at their render size.
    """
    if requested is None:
        numbers = tuple(range(1, info.page_count + 1))
    else:
        numbers = tuple(sorted(set(requested)))
        if len(numbers) != len(requested) or not numbers or numbers[0] < 1:
            raise InvalidPages(f"pages must be unique page numbers >= 1, got {list(requested)}")
        missing = [n for n in numbers if n > info.page_count]
        if missing:
            raise PageNotFound(f"the document has {info.page_count} pages; no page {missing[0]}")
    if len(numbers) > MAX_PAGES_PER_JOB:
        raise TooManyPages(
            f"{len(numbers)} pages to analyse; a job analyses at most {MAX_PAGES_PER_JOB}: "
            "select pages with `pages`"
        )
    pixels = sum(max(_decoded_pixels(info, n, d) for d in decodes) for n in numbers)
    if pixels > MAX_DOCUMENT_PIXELS:
        raise DocumentTooLarge(
            f"the {len(numbers)} pages to analyse decode to {pixels} pixels; the budget is "
            f"{MAX_DOCUMENT_PIXELS}: select fewer pages with `pages`"
        )
    return numbers


def decode_page(data: bytes, number: int, decode: PageDecode) -> Page:
    """Page ``number`` (1-based), upright, mode ``L``, decoded as ``decode`` says, in its frame (its blank
    measure is taken when first read).

    Images decode through ``images.decode_image`` (its bounds and errors, unchanged); a TIFF page is
    that frame; a PDF page renders grayscale on white at ``decode.pdf_scale``. The frame is the file's
    upright pixels for a raster page, the page's points for a PDF page (``Frame``).
    """
    _check_bytes(data)
    if is_pdf(data):
        image, (width_pt, height_pt) = render_page(data, number, decode)
        return Page(number, image, Frame(width_pt, height_pt, POINTS))
    image, (width, height) = decode_raster(data, number, decode)
    return Page(number, image, Frame(width, height, PIXELS))


def _check_bytes(data: bytes) -> None:
    images.check_input_bytes(data)


def _decoded_pixels(info: DocumentInfo, number: int, decode: PageDecode) -> int:
    width, height = info.page_sizes[number - 1]
    if info.kind == "pdf":
        return decode.pdf_pixels(width, height)
    return decode.raster_pixels(width, height)
