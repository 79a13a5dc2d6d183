"""Test inputs: small line drawings and hostile files (bombs, lying headers), generated at run time so the
repository stays small; and uploading them."""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Mapping
from typing import Any

from PIL import Image, ImageDraw


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def drawing_png(side_px: int = 256, *, seed: int = 0) -> bytes:
    """A small line drawing (black ink on white), PNG-encoded: cheap to decode, valid for the model."""
    rng = random.Random(seed)
    image = Image.new("L", (side_px, side_px), 255)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        points = [(rng.randrange(side_px), rng.randrange(side_px)) for _ in range(2)]
        draw.line(points, fill=0, width=2)
    draw.rectangle((side_px // 4, side_px // 4, 3 * side_px // 4, 3 * side_px // 4), outline=0, width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def drawing_jpeg(side_px: int = 256) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(drawing_png(side_px))).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_bomb(side_px: int = 40000) -> bytes:
    """A *valid* 1-bit PNG of side_px² pixels whose zlib stream inflates ~1000x (all-zero rows)."""
    row = b"\x00" * (1 + (side_px + 7) // 8)
    compressor = zlib.compressobj(9)
    parts = []
    rows_per_chunk = 1000
    block = row * rows_per_chunk
    full, rest = divmod(side_px, rows_per_chunk)
    for _ in range(full):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(row * rest))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", side_px, side_px, 1, 0, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def png_header_only(side_px: int = 1_000_000) -> bytes:
    """A PNG whose header claims side_px² 8-bit pixels, followed by a tiny (truncated) data stream."""
    ihdr = struct.pack(">IIBBBBB", side_px, side_px, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))


def jpeg_header_claiming(side_px: int = 65000) -> bytes:
    """A small real JPEG whose start-of-frame header is patched to claim side_px x side_px."""
    data = bytearray(drawing_jpeg(64))
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            data[at + 5 : at + 9] = side_px.to_bytes(2, "big") * 2
            return bytes(data)
    raise ValueError("no start-of-frame marker found")


def gif_header_claiming(side_px: int = 65535) -> bytes:
    """A tiny GIF whose logical screen and frame claim side_px x side_px."""
    buffer = io.BytesIO()
    Image.new("L", (4, 4), 255).save(buffer, format="GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = side_px.to_bytes(2, "little") * 2
    at = data.find(b"\x2c")  # image descriptor: left, top, width, height
    if at >= 0:
        data[at + 5 : at + 9] = side_px.to_bytes(2, "little") * 2
    return bytes(data)


def input_recipe(recipe: Mapping[str, Any]) -> tuple[bytes, str]:
    """Bytes and content type for a corpus input recipe (``{"recipe": name, ...options}``)."""
    name = recipe["recipe"]
    content_type = str(recipe.get("content_type", "image/png"))
    png = drawing_png
    builders: dict[str, Any] = {
        "drawing_png": png,
        "zero_bytes": lambda: b"",
        "truncated_png": lambda: _cut(png(), 0.6),
        "truncated_jpeg": lambda: _cut(drawing_jpeg(), 0.5),
        "random_bytes": lambda: random_bytes(4096),
        "text": lambda: b"this is not an image, it is a sentence.\n" * 20,
        "html": lambda: b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>\n",
        "svg": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><rect/></svg>',
        "png_bomb": lambda: png_bomb(int(recipe.get("side_px", 40000))),
        "png_header": lambda: png_header_only(int(recipe.get("side_px", 1_000_000))),
        "jpeg_header": lambda: jpeg_header_claiming(int(recipe.get("side_px", 65000))),
        "gif_header": lambda: gif_header_claiming(int(recipe.get("side_px", 65535))),
        "oversized_object": lambda: png() + b"\x00" * int(recipe["bytes"]),
    }
    if name == "truncated_jpeg":
        content_type = str(recipe.get("content_type", "image/jpeg"))
    return builders[name](), content_type


def _cut(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def random_bytes(size: int, *, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def upload(storage_client: Any, bucket: str, name: str, data: bytes, content_type: str) -> str:
    """Upload an input object; returns its gs:// URI."""
    storage_client.bucket(bucket).blob(name).upload_from_string(data, content_type=content_type)
    return f"gs://{bucket}/{name}"
