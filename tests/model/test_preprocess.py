"""The preprocessing contract: good images become the model tensor, bad input becomes a typed error."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worker.models.drawing_analyzer import model_spec, preprocessing
from worker.runtime.documents import images
from worker.shared.errors import ImageTooLarge, ImageUndecodable, InputTooLarge

SHAPE = model_spec.INPUT.shape


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _drawing_like(size: tuple[int, int] = (300, 200)) -> Image.Image:
    """White paper with a black frame and a filled block in the upper-left quarter."""
    image = Image.new("L", size, 255)
    pixels = np.asarray(image).copy()
    pixels[10:20, :] = 0
    pixels[: size[1] // 2, : size[0] // 4] = 0
    return Image.fromarray(pixels)


def _png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` over a tiny IDAT: a decompression bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _assert_tensor(tensor: np.ndarray) -> None:
    assert tensor.shape == SHAPE
    assert tensor.dtype == np.float32
    assert float(tensor.min()) >= 0.0
    assert float(tensor.max()) <= 1.0


# --- good input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF"])
def test_formats_give_the_same_picture(fmt: str) -> None:
    reference = preprocessing.image_to_tensor(_drawing_like())
    tensor = preprocessing.preprocess_bytes(_encode(_drawing_like(), fmt))
    _assert_tensor(tensor)
    assert np.abs(tensor - reference).mean() < 0.02


def test_letterbox_keeps_aspect_and_pads_with_paper() -> None:
    # Given a 2:1 landscape image that is all ink
    data = _encode(Image.new("L", (400, 200), 0), "PNG")
    # When it is preprocessed
    tensor = preprocessing.preprocess_bytes(data)[0]
    # Then the middle half is ink and the top and bottom quarters are paper
    size = model_spec.INPUT_SIZE_PX
    assert tensor[: size // 4 - 1].max() == 0.0
    assert tensor[size // 4 + 1 : 3 * size // 4 - 1].min() == 1.0
    assert tensor[3 * size // 4 + 1 :].max() == 0.0


def test_normalisation_ink_is_one_paper_is_zero() -> None:
    tensor = preprocessing.preprocess_bytes(_encode(_drawing_like((192, 192)), "PNG"))[0]
    assert tensor[0, -1] == 0.0  # paper
    assert tensor[15, 100] == 1.0  # the frame line
    assert tensor[50, 10] == 1.0  # the block


def test_rgb_cmyk_and_bilevel_convert_to_the_same_gray() -> None:
    gray = _drawing_like()
    reference = preprocessing.image_to_tensor(gray)
    for image, fmt in (
        (gray.convert("RGB"), "PNG"),
        (gray.convert("CMYK"), "JPEG"),
        (gray.convert("1"), "PNG"),
    ):
        tensor = preprocessing.preprocess_bytes(_encode(image, fmt))
        _assert_tensor(tensor)
        assert np.abs(tensor - reference).mean() < 0.03, image.mode


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    gray = np.asarray(_drawing_like(), dtype=np.uint16)
    sixteen = Image.fromarray(gray * 257)  # 0..65535
    data = _encode(sixteen, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    tensor = preprocessing.preprocess_bytes(data)
    assert np.abs(tensor - preprocessing.image_to_tensor(_drawing_like())).max() <= 1.0 / 255 + 1e-6


def test_float_tiff() -> None:
    gray = np.asarray(_drawing_like(), dtype=np.float32)
    tensor = preprocessing.preprocess_bytes(_encode(Image.fromarray(gray), "TIFF"))
    assert np.abs(tensor - preprocessing.image_to_tensor(_drawing_like())).max() <= 1.0 / 255 + 1e-6


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_onto_white_paper(mode: str) -> None:
    # Given ink where alpha is opaque and black-but-transparent pixels elsewhere
    rgba = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (0, 0, 100, 200))
    tensor = preprocessing.preprocess_bytes(_encode(rgba.convert(mode), "PNG"))[0]
    # Then the transparent half is paper, not ink
    assert tensor[:, :90].min() == 1.0
    assert tensor[:, 100:].max() == 0.0


def test_palette_with_transparency() -> None:
    palette = Image.new("P", (100, 100), 0)
    palette.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)
    palette.paste(1, (0, 0, 50, 100))
    data = _encode(palette, "PNG", transparency=0)
    tensor = preprocessing.preprocess_bytes(data)[0]
    assert tensor[:, :90].min() == 1.0  # opaque black (the left half, scaled to 192 px)
    assert tensor[:, 100:].max() == 0.0  # transparent red -> paper


def test_multi_frame_tiff_and_gif_use_the_first_frame() -> None:
    first, second, third = _drawing_like(), Image.new("L", (300, 200), 0), Image.new("L", (300, 200), 128)
    reference = preprocessing.image_to_tensor(first)
    for fmt in ("TIFF", "GIF"):
        data = _encode(first, fmt, save_all=True, append_images=[second, third])
        assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
        assert np.abs(preprocessing.preprocess_bytes(data) - reference).mean() < 0.02, fmt


def test_camera_mpo_jpeg_uses_the_main_picture() -> None:
    data = _encode(
        _drawing_like().convert("RGB"), "MPO", save_all=True, append_images=[Image.new("RGB", (300, 200))]
    )
    assert Image.open(io.BytesIO(data)).format == "MPO"
    reference = preprocessing.image_to_tensor(_drawing_like())
    assert np.abs(preprocessing.preprocess_bytes(data) - reference).mean() < 0.02


def test_exif_rotation_is_applied() -> None:
    # Given a landscape JPEG whose EXIF orientation (6) says "rotate 90 degrees clockwise to view"
    image = Image.new("L", (400, 200), 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(image, "JPEG", exif=exif.tobytes())
    # Then the tensor is portrait: ink in the middle columns, paper left and right
    tensor = preprocessing.preprocess_bytes(data)[0]
    size = model_spec.INPUT_SIZE_PX
    assert tensor[:, : size // 4 - 2].max() < 0.05
    assert tensor[:, size // 4 + 2 : 3 * size // 4 - 2].min() > 0.95


def test_large_jpeg_uses_draft_and_matches_png() -> None:
    big = _drawing_like((3000, 2000))
    from_jpeg = preprocessing.preprocess_bytes(_encode(big, "JPEG", quality=92))
    from_png = preprocessing.preprocess_bytes(_encode(big, "PNG"))
    assert np.abs(from_jpeg - from_png).mean() < 0.02


# --- bad input --------------------------------------------------------------------------------------------
def test_zero_bytes() -> None:
    with pytest.raises(ImageUndecodable, match="empty"):
        preprocessing.preprocess_bytes(b"")


@pytest.mark.parametrize(
    "data", [b"hello, not an image" * 10, b"%PDF-1.7\n" + b"\0" * 100, bytes(range(256)) * 4]
)
def test_non_image_bytes(data: bytes) -> None:
    with pytest.raises(ImageUndecodable) as info:
        preprocessing.preprocess_bytes(data)
    assert info.value.code == "IMAGE_UNDECODABLE"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "GIF"])
def test_truncated_image(fmt: str) -> None:
    noisy = Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 400), dtype=np.uint8))
    data = _encode(noisy, fmt)
    with pytest.raises(ImageUndecodable):
        preprocessing.preprocess_bytes(data[: len(data) // 2])


def test_unsupported_format_is_undecodable() -> None:
    data = _encode(_drawing_like(), "PPM")
    with pytest.raises(ImageUndecodable):
        preprocessing.preprocess_bytes(data)


def test_byte_limit() -> None:
    with pytest.raises(InputTooLarge):
        preprocessing.preprocess_bytes(b"\0" * (images.MAX_INPUT_BYTES + 1))


@pytest.mark.parametrize("side", [50_000, 7_000])  # above 2x and above 1x Pillow's MAX_IMAGE_PIXELS
def test_decompression_bomb_is_refused_from_the_header(side: int) -> None:
    data = _png_with_header(side, side)
    assert len(data) < 200
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge) as info:
        preprocessing.preprocess_bytes(data)
    assert time.perf_counter() - started < 1.0
    assert info.value.code == "IMAGE_TOO_LARGE"


def test_pillow_limit_is_set_deliberately() -> None:
    assert Image.MAX_IMAGE_PIXELS == images.MAX_INPUT_PIXELS
    assert 4961 * 7016 <= images.MAX_INPUT_PIXELS < 50_000 * 50_000


def test_gif_bomb_header() -> None:
    # GIF logical screen 65535 x 65535 (4.3 G pixels) with a 1x1 frame
    gif = bytearray(_encode(Image.new("P", (1, 1)), "GIF"))
    gif[6:10] = struct.pack("<HH", 65535, 65535)
    with pytest.raises((ImageTooLarge, ImageUndecodable)):
        preprocessing.preprocess_bytes(bytes(gif))


def test_just_under_the_pixel_limit_decodes() -> None:
    # A long thin strip under the limit is a valid (if odd) drawing, not an error.
    tensor = preprocessing.preprocess_bytes(_encode(Image.new("L", (20_000, 10), 0), "PNG"))
    _assert_tensor(tensor)


def test_every_allowed_format_opens_in_a_fresh_process(tmp_path: Path) -> None:
    # Image.open(formats=...) needs each plugin registered; a worker process may decode a TIFF before
    # anything else imported Pillow's plugins.
    for fmt in images.ALLOWED_FORMATS:
        (tmp_path / fmt).write_bytes(_encode(_drawing_like().convert("RGB"), fmt))
    code = (
        "import sys, pathlib; from worker.models.drawing_analyzer import preprocessing; "
        "[preprocessing.preprocess_bytes(p.read_bytes()) for p in pathlib.Path(sys.argv[1]).iterdir()]"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


# --- the fast PNG path (libpng through imagecodecs) against the Pillow path -----------------------------
@pytest.fixture
def fast_png_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the fast path's libpng decodes (one entry per call) while still running them."""
    assert images._fast_png is not None, "imagecodecs (the worker extra) is not installed"
    calls: list[int] = []
    real = images._fast_png.png_decode

    def counting(data: bytes) -> np.ndarray:
        calls.append(len(data))
        pixels: np.ndarray = real(data)
        return pixels

    monkeypatch.setattr(images._fast_png, "png_decode", counting)
    return calls


def _pillow_tensor(data: bytes) -> preprocessing.Tensor:
    return preprocessing.image_to_tensor(images.decode_image_pillow(data, size_px=model_spec.INPUT_SIZE_PX))


def _noisy_drawing(mode: str) -> Image.Image:
    """A drawing with grain, so filters and colour weights matter (an exact match is not trivial)."""
    grain = np.random.default_rng(7).integers(0, 40, (400, 600, 3), dtype=np.uint8)
    rgb = np.asarray(_drawing_like((600, 400)).convert("RGB")) - grain // 2
    return Image.fromarray(rgb.astype(np.uint8)).convert(mode)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_plain_png_takes_the_fast_path_with_the_same_tensor(mode: str, fast_png_calls: list[int]) -> None:
    data = _encode(_noisy_drawing(mode), "PNG")
    tensor = preprocessing.preprocess_bytes(data)
    assert fast_png_calls == [len(data)]
    np.testing.assert_array_equal(tensor, _pillow_tensor(data))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_png_goes_to_pillow_and_keeps_paper_white(mode: str, fast_png_calls: list[int]) -> None:
    # Black ink on the left half; black-but-transparent pixels on the right (decoded as plain gray, the
    # transparent paper would turn black)
    rgba = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (0, 0, 100, 200))
    data = _encode(rgba.convert(mode), "PNG")
    tensor = preprocessing.preprocess_bytes(data)[0]
    assert fast_png_calls == []
    assert tensor[:, 100:].max() == 0.0


def test_palette_and_gray_transparency_go_to_pillow(fast_png_calls: list[int]) -> None:
    palette = Image.new("P", (100, 100), 0)
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    gray = Image.new("L", (100, 100), 0)
    for data in (_encode(palette, "PNG"), _encode(palette, "PNG", transparency=0)):
        np.testing.assert_array_equal(preprocessing.preprocess_bytes(data), _pillow_tensor(data))
    # gray with a tRNS colour: the transparent black is paper
    assert preprocessing.preprocess_bytes(_encode(gray, "PNG", transparency=0)).max() == 0.0
    assert fast_png_calls == []


def test_sixteen_bit_png_goes_to_pillow_and_is_scaled(fast_png_calls: list[int]) -> None:
    data = _encode(Image.fromarray(np.asarray(_drawing_like(), dtype=np.uint16) * 257), "PNG")
    tensor = preprocessing.preprocess_bytes(data)
    assert fast_png_calls == []
    assert np.abs(tensor - preprocessing.image_to_tensor(_drawing_like())).max() <= 1.0 / 255 + 1e-6


def test_exif_rotated_png_goes_to_pillow_and_is_turned_upright(fast_png_calls: list[int]) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    data = _encode(Image.new("L", (400, 200), 0), "PNG", exif=exif.tobytes())
    tensor = preprocessing.preprocess_bytes(data)[0]
    assert fast_png_calls == []
    size = model_spec.INPUT_SIZE_PX
    assert tensor[:, : size // 4 - 2].max() == 0.0  # portrait: paper left and right
    assert tensor[:, size // 4 + 2 : 3 * size // 4 - 2].min() == 1.0


def test_exif_rotated_jpeg_matches_pillow(fast_png_calls: list[int]) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    data = _encode(_drawing_like().convert("RGB"), "JPEG", exif=exif.tobytes())
    np.testing.assert_array_equal(preprocessing.preprocess_bytes(data), _pillow_tensor(data))
    assert fast_png_calls == []


def test_truncated_png_fails_on_the_fast_path(fast_png_calls: list[int]) -> None:
    data = _encode(_noisy_drawing("L"), "PNG")
    with pytest.raises(ImageUndecodable):
        preprocessing.preprocess_bytes(data[: len(data) // 2])
    assert len(fast_png_calls) == 1  # libpng saw it and refused it: no half-decoded image


def test_pixel_bomb_png_is_refused_before_libpng(fast_png_calls: list[int]) -> None:
    with pytest.raises(ImageTooLarge):
        preprocessing.preprocess_bytes(_png_with_header(7_000, 7_000))
    assert fast_png_calls == []


def test_without_imagecodecs_every_png_takes_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _encode(_noisy_drawing("L"), "PNG")
    expected = preprocessing.preprocess_bytes(data)
    monkeypatch.setattr(images, "_fast_png", None)
    np.testing.assert_array_equal(preprocessing.preprocess_bytes(data), expected)
