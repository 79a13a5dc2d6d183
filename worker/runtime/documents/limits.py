"""The bounds every document is held to before any pixel is decoded (docs/security.md "Input documents").

One home for the numbers: ``worker.runtime.documents`` re-exports them; the reasons are next to each.
"""

from __future__ import annotations

from typing import Final

#: Most pages one job may analyse (the job's ``pages`` may name at most this many; a document with more
#: pages must select some). 64 A4 pages at the symbol model's 384 px are ~107 M rendered pixels.
MAX_PAGES_PER_JOB: Final = 64
#: Most pages a document may have at all (counted before walking every page: TIFF IFDs one by one up to
#: this bound, a PDF's page tree by its count). A 2,000-sheet drawing set is far past any real one.
MAX_DOCUMENT_PAGES: Final = 2_000
#: Most pixels the analysed pages of one job may decode to, summed (raster pages at full size, PDF pages
#: at their render size). Pages are decoded one at a time, so this bounds a job's CPU, not its memory:
#: 23 A4 300-dpi scans (8.7 M each), five A2 300-dpi scans, or every one of 64 rendered PDF pages.
MAX_DOCUMENT_PIXELS: Final = 200_000_000
#: Largest PDF page side in points (1/72 in): PDF's own limit (ISO 32000-1, Annex C.2), 200 in = 5.08 m.
MAX_PDF_PAGE_POINTS: Final = 14_400.0
#: A PDF page renders so its longer side is this many times the model's input side in pixels (1,536 px
#: for the 384 px symbol model, like the 1,754 px A4 150-dpi scans it learnt from, so its block-minimum
#: reduction uses the same factor 4). Measured on held-out generator drawings as PNG vs the same drawings
#: in a PDF: drawing model 24/24 labels agree at 1, 2, 4 and 6 (mean tensor difference least at 4,
#: 0.0052); symbol model's decided sets agree 23/24 at 4, 22/24 at 2 (docs/security.md).
RENDER_OVERSAMPLE: Final = 4
#: Longest side a PDF page renders to when its package declares a resolution (``[pages] pdf_dpi``): an A0
#: sheet (3,370 pt) at 175 dpi, A4 at 700 dpi. 8,192 x 5,793 grey pixels are 47 MB, within the render's
#: memory budget; the job's pixel budget (``MAX_DOCUMENT_PIXELS``) still counts every page.
MAX_RENDER_SIDE_PX: Final = 8_192
#: Most bytes a PDF's non-image streams may decompress to, summed over the file (content streams, forms,
#: fonts, object streams): PDFium inflates a content stream whole before parsing it.
MAX_PDF_INFLATED_BYTES: Final = 256 * 1024 * 1024
#: Longest one PDF page may take to parse and render (a forked child is killed past it): an A4 CAD page
#: renders in ~10-60 ms at 1,536 px, so 10 s is two orders of magnitude of headroom, not a real page.
MAX_RENDER_SECONDS: Final = 10.0
#: Memory a page's render may add to the process (RLIMIT_AS of the forked child over its size at fork):
#: the bundled packages' bitmaps are at most 1,536 x 1,536 bytes, a ``pdf_dpi`` render at most
#: ``MAX_RENDER_SIDE_PX`` squared (67 MB); PDFium's decoded images and fonts fit beside them.
MAX_RENDER_MEMORY_BYTES: Final = 512 * 1024 * 1024
