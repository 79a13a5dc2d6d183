"""The one preprocessing contract: image bytes -> the model's input tensor, or a typed error.

Decode -> first frame -> EXIF orientation -> grayscale (alpha composited onto white paper) -> letterbox
into ``INPUT_SIZE_PX`` square (aspect kept, centred, padded with paper) -> normalise to ink = 1.0,
paper = 0.0, FP32, shape ``model_spec.INPUT.shape``.

The worker (its CPU process pool), ``scripts/train_model.py`` and ``scripts/parity_check.py`` all call
``preprocess_bytes`` / ``image_to_tensor`` from here, so the model never sees pixels prepared another way.
Preprocessing runs in the worker's CPU pool rather than in a Triton ensemble: the input is an encoded
image of up to tens of MB, and decoding it on the GPU VM's CPU next to the fetch keeps Triton's requests
small (147 KB per image) and lets the worker reject bad input before it costs a GPU slot.

Bad input never crashes, hangs or allocates without bound: the byte size is checked first
(``MAX_INPUT_BYTES``), the pixel count is read from the header before any pixel is decoded
(``MAX_INPUT_PIXELS``, also installed as Pillow's ``Image.MAX_IMAGE_PIXELS``), only a fixed set of
formats is opened, and only the first frame of multi-frame files is decoded. Large JPEGs are decoded at
1/2, 1/4 or 1/8 scale through Pillow's ``draft`` (DCT scaling), which makes them several times cheaper.
"""

from __future__ import annotations

import io
import warnings
from typing import Final

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

from worker.runtime import model_spec
from worker.shared.errors import ImageTooLarge, ImageUndecodable, InputTooLarge

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

_SIXTEEN_BIT_MODES: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_ALPHA_MODES: Final = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})

Tensor = npt.NDArray[np.float32]


def preprocess_bytes(data: bytes, *, size_px: int = model_spec.INPUT_SIZE_PX) -> Tensor:
    """Encoded image bytes -> FP32 tensor of shape ``(1, size_px, size_px)``.

    Raises ``InputTooLarge`` (byte limit), ``ImageTooLarge`` (pixel limit, checked before decoding) or
    ``ImageUndecodable`` (empty, truncated, not an image, an unsupported format or mode).
    """
    if len(data) > MAX_INPUT_BYTES:
        raise InputTooLarge(f"input is {len(data)} bytes; the limit is {MAX_INPUT_BYTES}")
    if not data:
        raise ImageUndecodable("input is empty (0 bytes)")
    image = decode_image(data, size_px=size_px)
    return image_to_tensor(image, size_px=size_px)


def decode_image(data: bytes, *, size_px: int = model_spec.INPUT_SIZE_PX) -> Image.Image:
    """Decode the first frame, upright and in mode ``L`` (JPEGs at the smallest DCT scale >= ``size_px``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open(data)
            if image.format in ("JPEG", "MPO"):
                # Reduce at decode time; draft keeps both sides >= size_px, so quality is unaffected.
                image.draft("L", (size_px, size_px))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_gray(image)
    except (ImageTooLarge, ImageUndecodable):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image exceeds {MAX_INPUT_PIXELS} pixels: {exc}") from exc
    except MemoryError as exc:
        raise ImageTooLarge(f"image too large to decode: {exc}") from exc
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, struct.error, EOFError...
        raise ImageUndecodable(f"cannot decode image: {type(exc).__name__}: {exc}") from exc


def image_to_tensor(image: Image.Image, *, size_px: int = model_spec.INPUT_SIZE_PX) -> Tensor:
    """A decoded mode-``L`` image -> letterboxed, normalised FP32 tensor ``(1, size_px, size_px)``."""
    if image.mode != "L":
        image = _to_gray(image)
    width, height = image.size
    scale = size_px / max(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if new_size != image.size:
        # BOX averages every source pixel, so 1-px drawing lines survive as grey instead of vanishing;
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


def _to_gray(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> ``L``: 16-bit scaled (not clipped), alpha composited onto white paper."""
    mode = image.mode
    if mode == "L":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode == "F":
        return _wide_to_gray(image)
    if mode == "P" and "transparency" in image.info:
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
