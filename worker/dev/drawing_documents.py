"""Documents made from generator drawings, and bad ones, for tests and the bench.

Good documents: ``multipage_tiff`` (one frame per image), ``pdf_from_images`` (raster pages, the way a
scanner's PDF is: one image per page), ``vector_pdf`` (a hand-written content stream of lines and
rectangles, the way a CAD export is). Bad PDFs, each refused by ``worker.runtime.documents`` with its
code: ``encrypted_pdf`` (a user password), ``zero_page_pdf``, ``broken_xref_pdf`` (repairable or not),
``huge_page_pdf`` (20,000 pt a side), ``stream_bomb_pdf`` (a content stream inflating to gigabytes,
optionally double-Flate), ``nested_forms_pdf`` (Form XObjects drawing each other ``fan_out`` times,
``depth`` deep). The PDFs are written by hand (``write_pdf``) so that each defect is exactly the one named.

    >>> data = pdf_from_images([render_image(1)[0], render_image(2)[0]])
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Sequence

from PIL import Image

#: PDF's password padding (ISO 32000-1, 7.6.3.3, Algorithm 2).
_PASSWORD_PAD = bytes.fromhex("28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0ca9fe6453697a")
_FILE_ID = bytes.fromhex("00112233445566778899aabbccddeeff")
A4_POINTS = (842.0, 595.0)  # landscape, like the generator's sheets


def multipage_tiff(images: Sequence[Image.Image]) -> bytes:
    """A TIFF with one Deflate-compressed frame per image."""
    buf = io.BytesIO()
    images[0].save(buf, "TIFF", save_all=True, append_images=list(images[1:]), compression="tiff_deflate")
    return buf.getvalue()


def pdf_from_images(images: Sequence[Image.Image], *, resolution: float = 150.0) -> bytes:
    """A PDF with one raster page per image (Pillow's writer: JPEG-compressed images at ``resolution``)."""
    buf = io.BytesIO()
    images[0].save(buf, "PDF", resolution=resolution, save_all=True, append_images=list(images[1:]))
    return buf.getvalue()


def write_pdf(objects: Sequence[bytes], *, trailer: bytes = b"", xref_shift: int = 0) -> bytes:
    """A PDF of ``objects`` (numbered 1..n, object 1 the catalog), xref and trailer.

    ``xref_shift`` moves every xref offset by that many bytes (a broken table PDFium must rebuild).
    """
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % (offset + xref_shift) for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        trailer,
        xref_at,
    )
    return bytes(out)


def stream(content: bytes, extra: bytes = b"", *, flate: bool = False) -> bytes:
    """A stream object's body (``<< /Length ... >> stream ... endstream``)."""
    if flate:
        content, extra = zlib.compress(content), extra + b" /Filter /FlateDecode"
    return b"<< /Length %d%s >>\nstream\n%s\nendstream" % (len(content), extra, content)


def vector_page_content(seed: int = 0, size: tuple[float, float] = A4_POINTS) -> bytes:
    """A drawing-like content stream: border, title block, a plate with holes and centre lines."""
    width, height = size
    shift = 20 * (seed % 5)
    ops = [b"0 G 1.4 w", b"20 20 %.1f %.1f re S" % (width - 40, height - 40)]
    ops.append(b"%.1f 20 220 60 re S" % (width - 240))
    ops += [b"2.2 w", b"%d 160 300 200 re S" % (120 + shift), b"%d 160 120 200 re S" % (480 + shift)]
    for cx in (170, 370):
        ops.append(_circle(cx + shift, 260, 22))
    ops += [b"0.5 w [6 3 1 3] 0 d", b"%d 260 m %d 260 l S" % (100 + shift, 440 + shift), b"[] 0 d"]
    return b"\n".join(ops)


def vector_pdf(pages: int = 1, *, size: tuple[float, float] = A4_POINTS) -> bytes:
    """A PDF of ``pages`` vector drawings (Flate content streams), as a CAD program writes them."""
    contents = [stream(vector_page_content(i, size), flate=True) for i in range(pages)]
    return write_pdf(_page_tree(contents, size))


def encrypted_pdf(user_password: bytes = b"secret", owner_password: bytes = b"owner") -> bytes:
    """A one-page vector PDF under the standard security handler (RC4 40-bit, R2).

    With a non-empty ``user_password`` it cannot be opened without it; with ``b""`` it opens (only the
    owner's permissions are protected) and renders like ``vector_pdf(1)``.
    """
    permissions = -44  # print and copy refused: the usual "protected" export
    owner_key = hashlib.md5(_padded(owner_password)).digest()[:5]
    owner_entry = _rc4(owner_key, _padded(user_password))
    file_key = hashlib.md5(
        _padded(user_password) + owner_entry + struct.pack("<i", permissions) + _FILE_ID
    ).digest()[:5]
    user_entry = _rc4(file_key, _PASSWORD_PAD)
    object_key = hashlib.md5(file_key + (4).to_bytes(3, "little") + b"\x00\x00").digest()[:10]
    content = _rc4(object_key, vector_page_content())
    objects = _page_tree([stream(content)], A4_POINTS)
    objects.append(
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>"
        % (owner_entry.hex().encode(), user_entry.hex().encode(), permissions)
    )
    file_id = _FILE_ID.hex().encode()
    return write_pdf(objects, trailer=b"/Encrypt %d 0 R /ID [<%s> <%s>] " % (len(objects), file_id, file_id))


def zero_page_pdf() -> bytes:
    """A well-formed PDF whose page tree is empty."""
    return write_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"])


def broken_xref_pdf(*, repairable: bool) -> bytes:
    """A vector PDF with a wrong xref (PDFium rebuilds it from the objects), or one it cannot rebuild.

    Repairable: every offset is off by 7 bytes and ``startxref`` points past the file. Unrepairable:
    the same table over a file whose objects are cut off after the header (no catalog to find).
    """
    data = vector_pdf(1)
    if repairable:
        broken = write_pdf(_page_tree([stream(vector_page_content(), flate=True)], A4_POINTS), xref_shift=7)
        return broken.replace(b"startxref\n", b"startxref\n9")
    xref_at = data.index(b"xref\n")
    return data[:40] + b"\x00garbage\x00" * 8 + data[xref_at:]


def huge_page_pdf(side_pt: float = 20_000.0) -> bytes:
    """A one-page vector PDF whose page is ``side_pt`` x ``side_pt`` points (PDF's limit is 14,400)."""
    return vector_pdf(1, size=(side_pt, side_pt))


def stream_bomb_pdf(inflated_bytes: int = 1 << 30, *, double_flate: bool = False) -> bytes:
    """A one-page PDF whose content stream inflates to ``inflated_bytes`` of spaces (~1,000:1).

    ``double_flate``: the compressed stream compressed again (``/Filter [/FlateDecode /FlateDecode]``),
    a few KB on disk.
    """
    compressor, chunk, parts = zlib.compressobj(9), b" " * (1 << 20), []
    for _ in range(inflated_bytes // len(chunk)):
        parts.append(compressor.compress(chunk))
    parts.append(compressor.compress(b"0 0 m 10 10 l S\n") + compressor.flush())
    body, filters = b"".join(parts), b"/FlateDecode"
    if double_flate:
        body, filters = zlib.compress(body, 9), b"[/FlateDecode /FlateDecode]"
    content = b"<< /Length %d /Filter %s >>\nstream\n%s\nendstream" % (len(body), filters, body)
    return write_pdf(_page_tree([content], A4_POINTS))


def nested_forms_pdf(depth: int = 12, fan_out: int = 10) -> bytes:
    """A page drawing Form XObject F0, each Fi drawing F(i+1) ``fan_out`` times: ``fan_out**depth`` leaves."""
    first_form = 4  # 1 catalog, 2 pages, 3 page, then the page's content, then the forms
    forms = []
    for level in range(depth):
        child = first_form + 2 + level
        draws = b" ".join(b"q 1 0 0 1 %d 0 cm /F Do Q" % (i % 3) for i in range(fan_out))
        resources = b" /Resources << /XObject << /F %d 0 R >> >>" % child
        forms.append(stream(draws, b" /Type /XObject /Subtype /Form /BBox [0 0 842 595]" + resources))
    forms.append(stream(b"0 0 m 100 100 l S", b" /Type /XObject /Subtype /Form /BBox [0 0 842 595]"))
    content = stream(b"/F0 Do")
    objects = _page_tree(
        [content], A4_POINTS, resources=b"<< /XObject << /F0 %d 0 R >> >>" % (first_form + 1)
    )
    return write_pdf([*objects, *forms])


def _page_tree(
    contents: Sequence[bytes], size: tuple[float, float], *, resources: bytes = b"<< >>"
) -> list[bytes]:
    """Catalog, Pages, then per page a Page and its content stream (objects 1..2+2n)."""
    kids = b" ".join(b"%d 0 R" % (3 + 2 * i) for i in range(len(contents)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(contents)),
    ]
    for index, content in enumerate(contents):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %.1f %.1f] /Resources %s /Contents %d 0 R >>"
            % (size[0], size[1], resources, 4 + 2 * index)
        )
        objects.append(content)
    return objects


def _circle(cx: float, cy: float, r: float) -> bytes:
    k = 0.5523 * r  # Bezier control distance for a quarter circle
    return (
        b"%.1f %.1f m %.1f %.1f %.1f %.1f %.1f %.1f c %.1f %.1f %.1f %.1f %.1f %.1f c "
        b"%.1f %.1f %.1f %.1f %.1f %.1f c %.1f %.1f %.1f %.1f %.1f %.1f c S"
        % (
            cx + r, cy,
            cx + r, cy + k, cx + k, cy + r, cx, cy + r,
            cx - k, cy + r, cx - r, cy + k, cx - r, cy,
            cx - r, cy - k, cx - k, cy - r, cx, cy - r,
            cx + k, cy - r, cx + r, cy - k, cx + r, cy,
        )
    )  # fmt: skip


def _padded(password: bytes) -> bytes:
    return (password + _PASSWORD_PAD)[:32]


def _rc4(key: bytes, data: bytes) -> bytes:
    """RC4, for the standard security handler of ``encrypted_pdf`` only (test documents)."""
    state, j = list(range(256)), 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out, i, j = bytearray(), 0, 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)
