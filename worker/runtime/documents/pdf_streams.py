"""A PDF's stream budget: how many bytes its streams inflate to, counted before PDFium sees the file.

PDFium inflates a content stream (and a form's, a font's, an object stream's) whole into memory before
parsing it, so a 32 MB file of FlateDecode zeros is gigabytes of memory. This scan finds every
``stream`` keyword, reads the filter chain from the dictionary before it, and runs the leading
ASCIIHex/ASCII85/Flate filters with ``zlib.decompressobj(max_length=...)`` in bounded chunks, counting the
output and discarding it; past ``MAX_PDF_INFLATED_BYTES`` in total the document is ``DOCUMENT_TOO_COMPLEX``.
Image streams are not inflated here (PDFium decodes an image line by line to its declared size); their
declared size must be within ``MAX_INPUT_PIXELS``. Memory stays at one chunk; time is linear in the
budget (about 0.2 s for 256 MB of zeros).
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from collections.abc import Iterator

from worker.runtime.documents import images
from worker.runtime.documents.limits import MAX_PDF_INFLATED_BYTES
from worker.shared.errors import DocumentTooComplex

_CHUNK_BYTES = 1 << 20
# No look-behind for "end": it disables the regex's literal search (~25x slower over image data); the
# "endstream" matches are skipped in ``_streams``.
_STREAM = re.compile(rb"stream(?:\r\n|\n|\r)")
_FILTER = re.compile(rb"/Filter\s*(\[[^\]]*\]|/[A-Za-z0-9]+)")
_NAME = re.compile(rb"/([A-Za-z0-9]+)")
_IMAGE = re.compile(rb"/Subtype\s*/Image\b")
_DIMENSION = re.compile(rb"/(Width|Height)\s+(\d+)")
_FLATE = frozenset({b"FlateDecode", b"Fl"})
_ASCII85 = frozenset({b"ASCII85Decode", b"A85"})
_ASCII_HEX = frozenset({b"ASCIIHexDecode", b"AHx"})


def check_inflated_size(data: bytes, *, budget: int = MAX_PDF_INFLATED_BYTES) -> int:
    """The inflated bytes of the non-image streams; ``DocumentTooComplex`` past ``budget``."""
    total = 0
    for header, body in _streams(data):
        if _IMAGE.search(header):
            _check_image(header)
            continue
        total += _decoded_size(body, _filters(header), budget - total)
        if total > budget:
            raise DocumentTooComplex(
                f"the PDF's streams inflate to more than {budget} bytes (a decompression bomb)"
            )
    return total


def _streams(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``(dictionary text, stream bytes up to endstream)`` of each ``N G obj << ... >> stream``."""
    for match in _STREAM.finditer(data):
        if data[max(0, match.start() - 3) : match.start()] == b"end":
            continue
        header = data[max(0, data.rfind(b"obj", 0, match.start())) : match.start()]
        if not header.rstrip().endswith(b">>"):
            continue  # the word "stream" inside some stream's data, not a stream of its own
        end = data.find(b"endstream", match.end())
        yield header, data[match.end() : end if end >= 0 else len(data)]


def _filters(header: bytes) -> list[bytes]:
    found = _FILTER.search(header)
    return [] if found is None else _NAME.findall(found.group(1))


def _decoded_size(body: bytes, filters: list[bytes], allowance: int) -> int:
    """Bytes out of the leading ASCII and Flate filters; stops just past ``allowance``.

    A Flate stage that feeds another Flate stage (a chained bomb) is kept, bounded by ``allowance``; the
    last one is only counted. Other filters end the chain: PDFium decodes them to bounded sizes (DCT,
    JBIG2, CCITT: image dimensions) or a stream of them counts at its encoded size.
    """
    for index, name in enumerate(filters):
        if name in _FLATE:
            last_flate = not any(later in _FLATE for later in filters[index + 1 :])
            inflated, size = _inflate(body, allowance, keep=not last_flate)
            if last_flate or size > allowance:
                return size
            body = inflated
        elif name in _ASCII85:
            body = _ascii85(body)
        elif name in _ASCII_HEX:
            body = _ascii_hex(body)
        else:
            break
    return len(body)


def _inflate(body: bytes, allowance: int, *, keep: bool) -> tuple[bytes, int]:
    """``(output if keep, output size)``, reading at most ``allowance`` + one chunk of output."""
    inflater = zlib.decompressobj()
    parts: list[bytes] = []
    produced, pending = 0, body
    try:
        while pending and produced <= allowance and not inflater.eof:
            part = inflater.decompress(pending, _CHUNK_BYTES)
            produced += len(part)
            if keep:
                parts.append(part)
            pending = inflater.unconsumed_tail
    except zlib.error:
        pass  # a broken stream is PDFium's to refuse or repair; what inflated so far counts
    return b"".join(parts), produced


def _ascii85(body: bytes) -> bytes:
    try:
        return base64.a85decode(body.strip().removesuffix(b"~>"), adobe=False, ignorechars=b" \t\n\r\f\x00")
    except ValueError:
        return body


def _ascii_hex(body: bytes) -> bytes:
    digits = re.sub(rb"[^0-9A-Fa-f]", b"", body.split(b">", 1)[0])
    return binascii.unhexlify(digits + b"0" * (len(digits) % 2))


def _check_image(header: bytes) -> None:
    dims = dict(_DIMENSION.findall(header))
    width, height = int(dims.get(b"Width", b"0")), int(dims.get(b"Height", b"0"))
    if width * height > images.MAX_INPUT_PIXELS:
        raise DocumentTooComplex(
            f"the PDF holds a {width} x {height} image; the limit is {images.MAX_INPUT_PIXELS} pixels"
        )
