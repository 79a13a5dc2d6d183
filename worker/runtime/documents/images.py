"""Image inputs, for every model package: the decode with its security bounds, and the letterbox.

``decode_input``: encoded bytes -> the first frame, upright, grayscale (mode ``L``; alpha composited onto
white paper), or a typed error. ``letterbox``: a mode-``L`` image -> a square FP32 tensor (aspect kept,
centred, padded with paper; ink = 1.0, paper = 0.0), the input both bundled models were trained on; a
package with another input convention takes the decoded image and makes its own tensor.
``worker.runtime.documents`` decodes one-page images and a TIFF's first frame through ``decode_image``, so
every page a package sees went through these bounds.

Bad input never crashes, hangs or allocates without bound: the byte size is checked first
(``MAX_INPUT_BYTES``), the pixel count is read from the header before any pixel is decoded
(``MAX_INPUT_PIXELS``, also installed as Pillow's ``Image.MAX_IMAGE_PIXELS``), only a fixed set of
formats is opened, and only the first frame of multi-frame files is decoded. Large JPEGs are decoded at
1/2, 1/4 or 1/8 scale through Pillow's ``draft`` (DCT scaling), which makes them several times cheaper.

Plain PNGs (8-bit grayscale or RGB, not interlaced, no transparency, no EXIF, one frame) take a fast
path: the header is still read by Pillow's lazy open (format, size and pixel limit checked first), then
libpng (``imagecodecs.png_decode``) decodes the pixels, about 25 % less CPU than Pillow's own PNG decoder
for the same pixels (docs/performance.md, "Decoders"). The pixels are identical, so the tensor is too.
Anything else -- alpha, palettes, 16-bit, interlacing, EXIF, APNG, other formats -- and any machine
without imagecodecs goes through Pillow (``decode_image_pillow``), which composites alpha onto paper.
"""

from __future__ import annotations

import io
import math
import warnings
from types import ModuleType
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
from PIL import (  # the plugins of ALLOWED_FORMATS: Image.open(formats=...) needs them registered
    BmpImagePlugin,  # noqa: F401
    GifImagePlugin,  # noqa: F401
    Image,
    ImageFile,
    ImageOps,
    JpegImagePlugin,  # noqa: F401
    MpoImagePlugin,  # noqa: F401
    PngImagePlugin,  # noqa: F401
    TiffImagePlugin,  # noqa: F401
    UnidentifiedImageError,
    WebPImagePlugin,  # noqa: F401
)

from worker.shared.errors import ImageTooLarge, ImageUndecodable, InputTooLarge

_fast_png: ModuleType | None
try:  # the fast PNG path; without it (the training venv) every PNG takes Pillow's decoder: same pixels
    import imagecodecs as _fast_png
except ImportError:  # pragma: no cover - imagecodecs is in the worker extra
    _fast_png = None

#: Largest encoded input accepted, in bytes (an A3 300-dpi scan is ~2-10 MB as PNG/JPEG).
MAX_INPUT_BYTES: Final = 32 * 1024 * 1024
#: Largest decoded image accepted, in pixels (width x height): A2 at 300 dpi (4961 x 7016 = 34.8 M) fits.
#: Decoding the worst accepted image as RGBA/CMYK holds ~160 MB; a 50,000 x 50,000 "bomb" is refused from
#: its header without decoding.
MAX_INPUT_PIXELS: Final = 40_000_000
#: Formats Pillow may open; anything else is ImageUndecodable (keeps the exotic-plugin surface closed).
#: (A camera's multi-picture JPEG, MPO, opens through the JPEG plugin and decodes as its main picture.)
ALLOWED_FORMATS: Final[tuple[str, ...]] = ("PNG", "JPEG", "TIFF", "GIF", "BMP", "WEBP")

#: Paper value (white) used for letterbox padding and alpha compositing.
PAPER_LEVEL: Final = 255

# Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; we make it our own limit, and turn
# its warning into an error inside ``_open`` so the two checks agree.
Image.MAX_IMAGE_PIXELS = MAX_INPUT_PIXELS
# Truncated files must fail, not decode half-grey (this is Pillow's default; stated on purpose).
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: IHDR colour types the fast path decodes (8-bit only): grayscale and truecolour without alpha.
_PNG_GRAY: Final = 0
_PNG_RGB: Final = 2

_SIXTEEN_BIT_MODES: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_ALPHA_MODES: Final = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})

Tensor = npt.NDArray[np.float32]


def check_input_bytes(data: bytes) -> None:
    """The byte bounds of any input, before anything is parsed: ``InputTooLarge``, or empty -> undecodable."""
    if len(data) > MAX_INPUT_BYTES:
        raise InputTooLarge(f"input is {len(data)} bytes; the limit is {MAX_INPUT_BYTES}")
    if not data:
        raise ImageUndecodable("input is empty (0 bytes)")


def decode_input(data: bytes, *, size_px: int) -> Image.Image:
    """An input's encoded bytes -> its first frame, upright, mode ``L``: ``check_input_bytes``, then decode.

    Raises ``InputTooLarge`` (byte limit), ``ImageTooLarge`` (pixel limit, checked before decoding) or
    ``ImageUndecodable`` (empty, truncated, not an image, an unsupported format or mode).
    """
    check_input_bytes(data)
    return decode_image(data, size_px=size_px)


class Decoded(NamedTuple):
    """A decoded first frame and the size of the upright image in the file, before any reduction (the
    page's frame in pixels)."""

    image: Image.Image
    full_size: tuple[int, int]


def decode_image(data: bytes, *, size_px: int) -> Image.Image:
    """Decode the first frame, upright and in mode ``L`` (JPEGs at the smallest DCT scale >= ``size_px``).

    Plain 8-bit grayscale/RGB PNGs go through libpng (same pixels as Pillow's decoder, less CPU);
    everything else through Pillow, as ``decode_image_pillow`` does.
    """
    return _decode(data, size_px=size_px, fast_png=_fast_png is not None).image


def decode_image_pillow(data: bytes, *, size_px: int) -> Image.Image:
    """``decode_image`` through Pillow alone: every allowed format and mode (the reference path)."""
    return _decode(data, size_px=size_px, fast_png=False).image


def decode_bounded(data: bytes, *, size_px: int, max_side_px: int | None) -> Decoded:
    """``decode_image``, then reduced by the smallest whole factor that brings its longer side within
    ``max_side_px`` (None: never), with the file's upright size. A JPEG's DCT scaling does what it can of
    the reduction, never below ``size_px`` on either side."""
    return _decode(data, size_px=size_px, fast_png=_fast_png is not None, max_side_px=max_side_px)


def reduce_within(image: Image.Image, max_side_px: int | None) -> Image.Image:
    """``image`` reduced by the smallest whole factor that makes its longer side at most ``max_side_px``
    (Pillow's ``reduce``: each pixel the average of a factor x factor block, so thin lines stay as grey)."""
    if max_side_px is None or max(image.size) <= max_side_px:
        return image
    return image.reduce(math.ceil(max(image.size) / max_side_px))


def _draft_size(full: tuple[int, int], size_px: int, max_side_px: int | None) -> tuple[int, int]:
    """What a JPEG's DCT scaling must keep: both sides >= ``size_px`` and, with ``max_side_px``, the image
    no smaller than the reduction it is going to get anyway."""
    if max_side_px is None:
        return size_px, size_px
    factor = math.ceil(max(full) / max_side_px)
    return max(size_px, math.ceil(full[0] / factor)), max(size_px, math.ceil(full[1] / factor))


def _decode(data: bytes, *, size_px: int, fast_png: bool, max_side_px: int | None = None) -> Decoded:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open(data)  # the header only: format, size and the pixel limit before any pixel
            full = image.size
            if fast_png and _is_plain_png(image, data):
                return Decoded(reduce_within(_decode_plain_png(data), max_side_px), full)
            if image.format in ("JPEG", "MPO"):
                # Reduce at decode time; draft keeps both sides >= size_px, so quality is unaffected.
                image.draft("L", _draft_size(full, size_px, max_side_px))
            image.load()
            loaded = image.size
            image = ImageOps.exif_transpose(image)
            if image.size != loaded:  # an EXIF orientation that turns the image a quarter
                full = (full[1], full[0])
            return Decoded(reduce_within(to_gray(image), max_side_px), full)
    except (ImageTooLarge, ImageUndecodable):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image exceeds {MAX_INPUT_PIXELS} pixels: {exc}") from exc
    except MemoryError as exc:
        raise ImageTooLarge(f"image too large to decode: {exc}") from exc
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, struct.error, EOFError...
        # (and imagecodecs.PngError on the fast path: truncated, corrupt, bad CRC)
        raise ImageUndecodable(f"cannot decode image: {type(exc).__name__}: {exc}") from exc


def letterbox(image: Image.Image, *, size_px: int) -> Tensor:
    """A decoded image -> FP32 ``(1, size_px, size_px)``, aspect kept, centred on paper; ink 1, paper 0."""
    if image.mode != "L":
        image = to_gray(image)
    width, height = image.size
    scale = size_px / max(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if new_size != image.size:
        # BOX averages every source pixel, so 1-px lines survive as grey instead of vanishing;
        # reducing_gap lets Pillow use its fast integer reduce() first on big images.
        image = image.resize(new_size, Image.Resampling.BOX, reducing_gap=2.0)
    canvas = Image.new("L", (size_px, size_px), PAPER_LEVEL)
    canvas.paste(image, ((size_px - new_size[0]) // 2, (size_px - new_size[1]) // 2))
    pixels = np.asarray(canvas, dtype=np.float32)
    tensor = (PAPER_LEVEL - pixels) * np.float32(1.0 / PAPER_LEVEL)
    return tensor.reshape(1, size_px, size_px)


def _open(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError as exc:
        raise ImageUndecodable(
            "not an image in a supported format (PNG, JPEG, TIFF, GIF, BMP, WEBP)"
        ) from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageUndecodable(f"image has an empty size {width}x{height}")
    if width * height > MAX_INPUT_PIXELS:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; limit {MAX_INPUT_PIXELS}")
    return image


def _is_plain_png(header: Image.Image, data: bytes) -> bool:
    """True for a one-frame, non-interlaced 8-bit gray/RGB PNG without transparency or EXIF.

    ``header`` is Pillow's lazily opened image (nothing decoded yet); bit depth, colour type and
    interlacing are read from the IHDR chunk, which the PNG signature guarantees comes first.
    """
    if header.format != "PNG" or data[12:16] != b"IHDR" or len(data) < 29:
        return False
    bit_depth, color_type, interlace = data[24], data[25], data[28]
    if bit_depth != 8 or color_type not in (_PNG_GRAY, _PNG_RGB) or interlace != 0:
        return False
    if getattr(header, "n_frames", 1) != 1 or "transparency" in header.info:
        return False
    # EXIF may come as an eXIf chunk (before or after the pixels) or as ImageMagick's text profile;
    # the byte search is conservative (a false hit only sends the file to Pillow).
    return "exif" not in header.info and "Raw profile type exif" not in header.info and b"eXIf" not in data


def _decode_plain_png(data: bytes) -> Image.Image:
    """libpng decode of a plain PNG -> mode ``L`` (RGB converted by Pillow's own ITU-R 601 weights)."""
    assert _fast_png is not None  # checked by the caller
    pixels = _fast_png.png_decode(data)  # errors (truncated, corrupt, bad CRC) are mapped by _decode
    if pixels.ndim == 2:
        return Image.fromarray(pixels, mode="L")
    return Image.fromarray(pixels, mode="RGB").convert("L")


def to_gray(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> ``L``: 16-bit scaled (not clipped), alpha composited onto white paper."""
    mode = image.mode
    if mode == "L" and "transparency" not in image.info:
        return image
    if mode in _SIXTEEN_BIT_MODES or mode == "F":
        return _wide_to_gray(image)
    if mode in ("P", "L", "RGB") and "transparency" in image.info:  # a tRNS colour: composite it too
        mode = "PA"
        image = image.convert("RGBA")
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (PAPER_LEVEL, PAPER_LEVEL, PAPER_LEVEL, 255))
        paper.alpha_composite(rgba)
        return paper.convert("L")
    if mode in ("1", "P", "RGB"):
        return image.convert("L")
    # CMYK, YCbCr, LAB, HSV ...: through RGB (Pillow has no direct path to L for all of them).
    return image.convert("RGB").convert("L")


def _wide_to_gray(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale -> ``L`` by scaling the range, not clipping at 255."""
    wide = image.convert("F") if image.mode == "F" else image.convert("I")
    pixels = np.asarray(wide, dtype=np.float32)
    if image.mode == "F":
        peak = 1.0 if float(pixels.max(initial=0.0)) <= 1.0 else 255.0
    else:
        peak = 65535.0 if float(pixels.max(initial=0.0)) > 255.0 or image.mode != "I" else 255.0
    scaled = np.clip(pixels * (255.0 / peak), 0.0, 255.0)
    return Image.fromarray(np.rint(scaled).astype(np.uint8))
