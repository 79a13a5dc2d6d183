"""Raster documents: one-page images (PNG, JPEG, GIF, BMP, WEBP, MPO) and multi-page TIFFs.

A one-page input decodes through ``worker.runtime.documents.images.decode_image`` (its format allow-list,
bounds and errors: ``IMAGE_TOO_LARGE``, ``IMAGE_UNDECODABLE``), so a schema_version 1 job, which knows
nothing of pages, is answered by the same rules as a one-page schema_version 2 job. A TIFF with several
frames is one page per frame: the IFDs are walked one at a time (at most ``MAX_DOCUMENT_PAGES`` + 1, so a
file of a million tiny IFDs is refused without reading them all), each frame's size is read from its IFD
before any pixel is decoded, and a frame over ``MAX_INPUT_PIXELS`` is ``PAGE_TOO_LARGE``.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from worker.runtime.documents import images
from worker.runtime.documents.limits import MAX_DOCUMENT_PAGES
from worker.runtime.documents.records import DocumentInfo, PageDecode
from worker.shared.errors import DocumentTooLarge, ImageTooLarge, ImageUndecodable, PageTooLarge

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders


def is_tiff(data: bytes) -> bool:
    """The TIFF magic (no decoding)."""
    return data[:4] in TIFF_MAGIC


def probe_raster(data: bytes) -> DocumentInfo:
    """Page count and per-page pixel sizes from the headers (IFDs for TIFF)."""
    with _bomb_warnings_as_errors():
        image = _open(data)
        sizes = [image.size]
        if image.format == "TIFF":
            sizes.extend(_later_frame_sizes(image))
    multi_page = len(sizes) > 1
    for number, (width, height) in enumerate(sizes, start=1):
        _check_pixels(width, height, number if multi_page else None)
    kind = "tiff" if image.format == "TIFF" else "image"
    return DocumentInfo(kind, len(sizes), tuple((float(w), float(h)) for w, h in sizes))


def decode_raster(data: bytes, number: int, decode: PageDecode) -> images.Decoded:
    """Page ``number`` (1-based) upright in mode ``L``, within ``decode.max_side_px``, with its full upright
    size (the page's frame); page 1 through ``images.decode_bounded``."""
    if number == 1:
        return images.decode_bounded(data, size_px=decode.size_px, max_side_px=decode.max_side_px)
    try:
        with _bomb_warnings_as_errors():
            image = _open(data)
            image.seek(number - 1)  # walks the IFDs up to that frame: bounded by probe's page count
            _check_pixels(*image.size, number)
            image.load()
            upright = ImageOps.exif_transpose(image)
            gray = images.to_gray(upright)
            return images.Decoded(images.reduce_within(gray, decode.max_side_px), upright.size)
    except (PageTooLarge, ImageUndecodable):
        raise
    except EOFError as exc:
        raise ImageUndecodable(f"the TIFF has no page {number}") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError) as exc:
        raise PageTooLarge(f"page {number} is too large to decode: {exc}") from exc
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, struct.error...
        raise ImageUndecodable(f"cannot decode page {number}: {type(exc).__name__}: {exc}") from exc


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=images.ALLOWED_FORMATS)
    except UnidentifiedImageError as exc:
        formats = ", ".join(images.ALLOWED_FORMATS)
        raise ImageUndecodable(f"not an image in a supported format ({formats})") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image exceeds {images.MAX_INPUT_PIXELS} pixels: {exc}") from exc
    except Exception as exc:
        raise ImageUndecodable(f"cannot read the image header: {type(exc).__name__}: {exc}") from exc


def _later_frame_sizes(image: Image.Image) -> list[tuple[int, int]]:
    """Frames 2.. of a TIFF, by seeking IFD after IFD (never ``n_frames``, which walks all of them)."""
    sizes: list[tuple[int, int]] = []
    while True:
        try:
            image.seek(len(sizes) + 1)
        except EOFError:
            return sizes
        except Exception as exc:
            raise ImageUndecodable(f"cannot read TIFF page {len(sizes) + 2}: {exc}") from exc
        sizes.append(image.size)
        if len(sizes) + 1 > MAX_DOCUMENT_PAGES:
            raise DocumentTooLarge(f"the TIFF has more than {MAX_DOCUMENT_PAGES} pages")


def _check_pixels(width: int, height: int, number: int | None) -> None:
    """A page over the pixel limit: ``IMAGE_TOO_LARGE`` for a one-page input (as ever), else by page."""
    if width <= 0 or height <= 0:
        raise ImageUndecodable(f"page has an empty size {width}x{height}")
    pixels = width * height
    if pixels <= images.MAX_INPUT_PIXELS:
        return
    limit = images.MAX_INPUT_PIXELS
    if number is None:
        raise ImageTooLarge(f"image is {width}x{height} = {pixels} pixels; limit {limit}")
    raise PageTooLarge(f"page {number} is {width}x{height} = {pixels} pixels; the limit is {limit}")


class _bomb_warnings_as_errors(warnings.catch_warnings):
    """Pillow's DecompressionBombWarning as an error, as images does, so both limits agree."""

    def __enter__(self) -> None:
        super().__enter__()
        warnings.simplefilter("error", Image.DecompressionBombWarning)
