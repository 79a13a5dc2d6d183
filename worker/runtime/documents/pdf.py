"""PDF documents through PDFium (pypdfium2): open, page tree, render one page grayscale on white paper.

Bounds, in order: the inflated size of the file's streams (``pdf_streams``; ``DOCUMENT_TOO_COMPLEX``),
opening (a password -> ``DOCUMENT_ENCRYPTED``; garbage or a cross-reference table PDFium cannot rebuild ->
``DOCUMENT_UNREADABLE``; PDFium rebuilds many broken ones by scanning for ``N G obj``, and those are
answered), the page count (0 -> ``DOCUMENT_EMPTY``, over ``MAX_DOCUMENT_PAGES`` -> ``DOCUMENT_TOO_LARGE``)
and each page's size from the page tree without loading its content (``FPDF_GetPageSizeByIndexF``; a side
over 14,400 pt -> ``PAGE_TOO_LARGE``). A PDF encrypted with an empty user password (permissions only)
opens without one and is answered.

A page renders so its longer side is ``RENDER_OVERSAMPLE x size_px`` pixels: a resolution derived from the
model's input size, so the rendered pixels (and the CPU) per page are bounded whatever the page's size; a
package that needs a resolution (an OCR detector: text at its printed size) declares ``pdf_dpi``, bounded by
``MAX_RENDER_SIDE_PX`` and its ``max_side_px`` (``records.PageDecode``). The page's size in points (its
visible box, rotation applied, as PDFium reports and renders it) comes back with the image: the page's
frame. Annotations and form fields are not drawn (the drawing is the page content; an annotation's
appearance is one more stream to trust).

PDFium is not thread-safe: call this module from one thread per process (the worker's preprocess pool
runs one task at a time per process).
"""

from __future__ import annotations

import re
from typing import NamedTuple

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from worker.runtime.documents import pdf_streams, sandbox
from worker.runtime.documents.limits import MAX_DOCUMENT_PAGES, MAX_PDF_PAGE_POINTS
from worker.runtime.documents.records import DocumentInfo, PageDecode
from worker.shared.errors import (
    DocumentEmpty,
    DocumentEncrypted,
    DocumentTooLarge,
    DocumentUnreadable,
    ImageUndecodable,
    PageTooLarge,
)

_PASSWORD_ERRORS = frozenset({pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY})
_EMPTY_PAGE_TREE = re.compile(rb"/Type\s*/Pages\b[^>]*/Count\s+0\b|/Count\s+0\b[^>]*/Type\s*/Pages\b")


def is_pdf(data: bytes) -> bool:
    """``%PDF-`` within the first 1,024 bytes (where PDF readers, PDFium included, look for it)."""
    return b"%PDF-" in data[:1024]


def probe_pdf(data: bytes) -> DocumentInfo:
    """Page count and page sizes in points from the page tree; no page content is parsed."""
    pdf_streams.check_inflated_size(data)
    document = _open(data)
    try:
        sizes = tuple(_page_size(document, index) for index in range(len(document)))
    finally:
        document.close()
    return DocumentInfo("pdf", len(sizes), sizes)


class Rendered(NamedTuple):
    """A rendered PDF page and its size in points (visible box, rotation applied: the page's frame)."""

    image: Image.Image
    size_pt: tuple[float, float]


def render_pdf_page(data: bytes, number: int, *, size_px: int) -> Image.Image:
    """Page ``number`` (1-based), mode ``L``, longer side ``RENDER_OVERSAMPLE * size_px`` pixels."""
    return render_page(data, number, PageDecode(size_px)).image


def render_page(data: bytes, number: int, decode: PageDecode) -> Rendered:
    """Page ``number`` (1-based), mode ``L``, at ``decode.pdf_scale`` of its size, with that size in points.

    Parsing and drawing run in a forked child bounded in time and memory (``sandbox``).
    """
    pdf_streams.check_inflated_size(data)
    return sandbox.call_bounded(lambda: _render(data, number, decode))


def _render(data: bytes, number: int, decode: PageDecode) -> Rendered:
    document = _open(data)
    try:
        if not 1 <= number <= len(document):
            raise ImageUndecodable(f"the PDF has no page {number} (it has {len(document)})")
        width_pt, height_pt = _page_size(document, number - 1)
        page = document[number - 1]
        try:
            bitmap = page.render(
                scale=decode.pdf_scale(width_pt, height_pt),
                grayscale=True,
                fill_color=(255, 255, 255, 255),
                may_draw_forms=False,
                draw_annots=False,
            )
            image: Image.Image = bitmap.to_pil()
            image = image.convert("L") if image.mode != "L" else image.copy()  # off PDFium's buffer
            bitmap.close()
        finally:
            page.close()
    finally:
        document.close()
    return Rendered(image, (width_pt, height_pt))


def _open(data: bytes) -> pdfium.PdfDocument:
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise _open_error(data, exc.err_code) from exc
    count = len(document)
    if count == 0:
        document.close()
        raise DocumentEmpty("the PDF has no pages")
    if count > MAX_DOCUMENT_PAGES:
        document.close()
        raise DocumentTooLarge(f"the PDF has {count} pages; the limit is {MAX_DOCUMENT_PAGES}")
    return document


def _open_error(data: bytes, err_code: int | None) -> DocumentEncrypted | DocumentEmpty | DocumentUnreadable:
    """Why PDFium refused the file. Its error code is the process's *last* error, which a refusal that
    sets none (a document with an empty page tree: "Success") leaves stale, so each reading is confirmed
    from the file: a password needs an ``/Encrypt`` dictionary, an empty document a ``/Count 0``."""
    if err_code in _PASSWORD_ERRORS and b"/Encrypt" in data:
        return DocumentEncrypted("the PDF is encrypted and needs a password to open")
    if _EMPTY_PAGE_TREE.search(data):
        return DocumentEmpty("the PDF has no pages")
    return DocumentUnreadable("PDFium cannot open the PDF: not a PDF, or damaged past repair")


def _page_size(document: pdfium.PdfDocument, index: int) -> tuple[float, float]:
    try:
        width, height = document.get_page_size(index)
    except pdfium.PdfiumError as exc:
        raise DocumentUnreadable(f"page {index + 1} has no readable size: {exc}") from exc
    if not (width > 0 and height > 0):
        raise DocumentUnreadable(f"page {index + 1} has an empty size {width} x {height} pt")
    if max(width, height) > MAX_PDF_PAGE_POINTS:
        raise PageTooLarge(
            f"page {index + 1} is {width:.0f} x {height:.0f} pt; "
            f"PDF's limit is {MAX_PDF_PAGE_POINTS:.0f} pt a side"
        )
    return float(width), float(height)
