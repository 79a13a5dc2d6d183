"""worker.runtime.documents: pages of images, TIFFs and PDFs, the limits, and each bad PDF's code.

Documents are made in the test from generator drawings and hand-written PDFs (worker.dev.drawing_documents).
"""

from __future__ import annotations

import io
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from worker.dev import drawing_documents as dd
from worker.dev.drawings import encode, render_image
from worker.runtime import documents
from worker.runtime.documents import images, sandbox
from worker.shared import errors

SMALL = (420, 297)


@pytest.fixture(scope="module")
def sheets() -> list[Image.Image]:
    return [render_image(seed, size=SMALL)[0] for seed in (1, 2, 3)]


def blank_sheet() -> Image.Image:
    return Image.new("L", SMALL, 250)


def test_may_have_pages_reads_magic_bytes_only(sheets: list[Image.Image]) -> None:
    assert documents.may_have_pages(dd.multipage_tiff(sheets))
    assert documents.may_have_pages(dd.vector_pdf(1))
    assert documents.may_have_pages(b"junk before the header " + dd.vector_pdf(1))
    assert not documents.may_have_pages(encode(sheets[0]))
    assert not documents.may_have_pages(b"")


def test_an_image_is_one_page_decoded_as_preprocess_decodes_it(sheets: list[Image.Image]) -> None:
    data = encode(sheets[0])
    info = documents.probe(data)
    assert info == documents.DocumentInfo("image", 1, ((420.0, 297.0),))
    page = documents.decode_page(data, 1, documents.PageDecode(192))
    assert page.number == 1 and page.image.mode == "L"
    assert page.image.tobytes() == images.decode_image(data, size_px=192).tobytes()
    assert 0.005 < page.measure.content < 0.2 and page.measure.paper >= 200 and not page.blank


def test_a_tiff_is_one_page_per_frame_in_order(sheets: list[Image.Image]) -> None:
    data = dd.multipage_tiff([sheets[0], blank_sheet(), sheets[2]])
    info = documents.probe(data)
    assert (info.kind, info.page_count) == ("tiff", 3)
    assert info.page_sizes == ((420.0, 297.0),) * 3
    pages = [documents.decode_page(data, n, documents.PageDecode(192)) for n in (1, 2, 3)]
    assert [p.blank for p in pages] == [False, True, False]
    assert pages[2].image.tobytes() == sheets[2].tobytes()  # lossless frames: the same pixels


def test_a_raster_pdf_renders_each_page_at_the_oversampled_model_size(sheets: list[Image.Image]) -> None:
    data = dd.pdf_from_images(sheets)
    info = documents.probe(data)
    assert (info.kind, info.page_count) == ("pdf", 3)
    page = documents.decode_page(data, 2, documents.PageDecode(192))
    assert max(page.image.size) == documents.RENDER_OVERSAMPLE * 192 and page.image.mode == "L"
    assert not page.blank


def test_a_vector_pdf_renders_black_lines_on_white_paper() -> None:
    page = documents.decode_page(dd.vector_pdf(2), 2, documents.PageDecode(384))
    assert page.image.size == (1536, math.ceil(1536 * 595 / 842))
    low, high = page.image.getextrema()
    assert (low, high) == (0, 255) and not page.blank


def test_select_pages_defaults_to_every_page_and_checks_requests() -> None:
    info = documents.DocumentInfo("pdf", 3, ((842.0, 595.0),) * 3)
    assert documents.select_pages(info, None, decodes=[documents.PageDecode(192)]) == (1, 2, 3)
    assert documents.select_pages(info, [3, 1], decodes=[documents.PageDecode(192)]) == (1, 3)
    with pytest.raises(errors.PageNotFound, match="no page 4"):
        documents.select_pages(info, [1, 4], decodes=[documents.PageDecode(192)])
    with pytest.raises(errors.InvalidPages):
        documents.select_pages(info, [0], decodes=[documents.PageDecode(192)])


def test_too_many_pages_and_the_pixel_budget_are_refused_before_decoding() -> None:
    many = documents.DocumentInfo("pdf", 65, ((842.0, 595.0),) * 65)
    with pytest.raises(errors.TooManyPages, match="select pages with `pages`"):
        documents.select_pages(many, None, decodes=[documents.PageDecode(192)])
    assert (
        len(documents.select_pages(many, range(1, 65), decodes=[documents.PageDecode(192)]))
        == documents.MAX_PAGES_PER_JOB
    )
    scans = documents.DocumentInfo("tiff", 30, ((4961.0, 7016.0),) * 30)  # A2 at 300 dpi
    assert documents.select_pages(scans, [1, 2, 3, 4, 5], decodes=[documents.PageDecode(192)]) == (
        1,
        2,
        3,
        4,
        5,
    )
    with pytest.raises(errors.DocumentTooLarge, match="budget"):
        documents.select_pages(scans, [1, 2, 3, 4, 5, 6], decodes=[documents.PageDecode(192)])


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: dd.encrypted_pdf(b"secret"), "DOCUMENT_ENCRYPTED"),
        (dd.zero_page_pdf, "DOCUMENT_EMPTY"),
        (lambda: dd.broken_xref_pdf(repairable=False), "DOCUMENT_UNREADABLE"),
        (lambda: b"%PDF-1.7\n" + bytes(range(256)) * 8, "DOCUMENT_UNREADABLE"),
        (dd.huge_page_pdf, "PAGE_TOO_LARGE"),
        (lambda: dd.stream_bomb_pdf(1 << 29), "DOCUMENT_TOO_COMPLEX"),
        (lambda: dd.stream_bomb_pdf(1 << 29, double_flate=True), "DOCUMENT_TOO_COMPLEX"),
    ],
)
def test_each_bad_pdf_is_refused_by_probe_with_its_code(make: object, code: str) -> None:
    data = make()  # type: ignore[operator]
    with pytest.raises(errors.PermanentError) as raised:
        documents.probe(data)
    assert raised.value.code == code
    with pytest.raises(errors.PermanentError) as raised_again:
        documents.decode_page(data, 1, documents.PageDecode(192))
    assert raised_again.value.code == code


def test_pdfs_pdfium_opens_despite_their_flaws_are_answered() -> None:
    vector = documents.decode_page(dd.vector_pdf(1), 1, documents.PageDecode(192))
    for data in (dd.broken_xref_pdf(repairable=True), dd.encrypted_pdf(b"")):
        assert documents.probe(data).page_count == 1
        page = documents.decode_page(data, 1, documents.PageDecode(192))
        assert page.image.tobytes() == vector.image.tobytes()


def test_a_tiff_frame_over_the_pixel_limit_is_page_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    data = dd.multipage_tiff([blank_sheet(), Image.new("L", (800, 600), 255)])
    monkeypatch.setattr(images, "MAX_INPUT_PIXELS", 200_000)  # 420 x 297 fits, 800 x 600 does not
    with pytest.raises(errors.PageTooLarge, match="page 2"):
        documents.probe(data)
    with pytest.raises(errors.PageTooLarge, match="page 2"):
        documents.decode_page(data, 2, documents.PageDecode(192))


def test_a_single_image_keeps_its_old_errors() -> None:
    with pytest.raises(errors.ImageUndecodable):
        documents.probe(b"not an image")
    with pytest.raises(errors.ImageUndecodable):
        documents.decode_page(b"", 1, documents.PageDecode(192))
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    with pytest.raises(errors.InputTooLarge):
        documents.probe(buf.getvalue() + b"\0" * images.MAX_INPUT_BYTES)


def test_nested_forms_are_bounded_and_the_process_lives() -> None:
    """10^12 form draws: the forked render hits its memory or time bound; this process is unharmed."""
    for depth, fan_out in ((12, 10), (45, 2)):
        with pytest.raises(errors.DocumentTooComplex):
            documents.decode_page(dd.nested_forms_pdf(depth, fan_out), 1, documents.PageDecode(192))
    page = documents.decode_page(dd.nested_forms_pdf(3, 10), 1, documents.PageDecode(192))  # 1,000 draws
    assert page.measure.content > 0  # it drew


def test_the_render_sandbox_kills_a_render_past_its_time() -> None:
    def forever() -> None:
        while True:
            pass

    with pytest.raises(errors.DocumentTooComplex, match=r"did not render within 0\.5 s"):
        sandbox.call_bounded(forever, seconds=0.5)
    assert sandbox.call_bounded(lambda: 6 * 7) == 42
    with pytest.raises(errors.DocumentUnreadable, match="ZeroDivisionError"):
        sandbox.call_bounded(lambda: 1 // 0)


def test_a_stream_bomb_is_refused_with_bounded_memory() -> None:
    """A 1 GiB bomb in a fresh interpreter: refused, peak RSS far below what inflating it would take."""
    code = (
        "from worker.dev import drawing_documents as dd\n"
        "from worker.runtime import documents\n"
        "data = dd.stream_bomb_pdf(1 << 30)\n"
        "try:\n    documents.probe(data)\nexcept Exception as e:\n    print(e.code)\n"
        # VmHWM, not ru_maxrss: ru_maxrss keeps the forking parent's peak across exec (the test runner's)
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(int(hwm.split()[1]) // 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    refused, peak_mib = done.stdout.split()
    assert refused == "DOCUMENT_TOO_COMPLEX"
    assert int(peak_mib) < 300, f"peak RSS {peak_mib} MiB"


# --- how a package has its pages decoded, and the page's own frame --------------------------------------
def ink_box(image: Image.Image) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1; x1, y1 excluded) of the pixels darker than 128."""
    pixels = np.asarray(image)
    ys, xs = np.nonzero(pixels < 128)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def boxed(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=0)
    return image


def encoded(image: Image.Image, kind: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def test_a_raster_pages_frame_is_the_files_pixels_whatever_size_it_was_decoded_at() -> None:
    box = (400, 300, 1200, 900)
    sheet = boxed((2400, 1600), box)
    # A PNG at full size: frame = image; reduced to a max side: the smallest whole factor, same frame
    full = documents.decode_page(encoded(sheet, "PNG"), 1, documents.PageDecode(192))
    assert full.image.size == (2400, 1600) and full.scale == (1.0, 1.0)
    assert (full.frame.width, full.frame.height, full.frame.unit) == (2400, 1600, "px")
    reduced = documents.decode_page(encoded(sheet, "PNG"), 1, documents.PageDecode(192, max_side_px=1000))
    assert reduced.image.size == (800, 534) and reduced.frame == full.frame  # reduce(3): 2400/3, ceil(1600/3)
    # A JPEG decoded at 1/8 by DCT scaling (both sides >= 192): the frame is still the file's pixels
    jpeg = documents.decode_page(encoded(sheet, "JPEG", quality=95), 1, documents.PageDecode(192))
    assert jpeg.image.size == (300, 200) and jpeg.frame == full.frame and jpeg.scale == (8.0, 8.0)
    found = ink_box(jpeg.image)
    mapped = [found[0] * 8, found[1] * 8, found[2] * 8, found[3] * 8]
    assert mapped == pytest.approx(list(box), abs=8)  # within one decoded pixel
    # with max_side_px the DCT scaling does what it can of the reduction, never below size_px
    bounded = documents.decode_page(encoded(sheet, "JPEG"), 1, documents.PageDecode(64, max_side_px=600))
    assert bounded.image.size == (600, 400) and bounded.scale == (4.0, 4.0)


def test_an_exif_turned_jpegs_frame_is_upright() -> None:
    # Given a JPEG stored 300 x 200 whose EXIF orientation (6) turns it a quarter clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encoded(boxed((300, 200), (0, 0, 30, 20)), "JPEG", exif=exif.tobytes())
    page = documents.decode_page(data, 1, documents.PageDecode(50))
    # Then the page and its frame are upright (200 x 300); the decode is at 1/4 (both sides >= 50)
    assert (page.frame.width, page.frame.height) == (200, 300)
    assert page.image.size == (50, 75) and page.scale == (4.0, 4.0)
    # and the ink, top left in the stored image, is top right upright: x 180..200, y 0..30
    x0, y0, x1, y1 = ink_box(page.image)
    assert [x0 * 4, y0 * 4, x1 * 4, y1 * 4] == pytest.approx([180, 0, 200, 30], abs=4)


def test_a_tiff_pages_frame_is_that_frames_pixels() -> None:
    data = dd.multipage_tiff([boxed((300, 200), (1, 1, 5, 5)), boxed((800, 600), (100, 60, 500, 260))])
    page = documents.decode_page(data, 2, documents.PageDecode(192, max_side_px=400))
    assert (page.frame.width, page.frame.height, page.frame.unit) == (800, 600, "px")
    assert page.image.size == (400, 300)
    found = ink_box(page.image)
    assert [v * 2 for v in found] == [100, 60, 500, 260]


def test_a_pdf_pages_frame_is_its_points_with_the_rotation_applied_at_any_resolution() -> None:
    # Given a US-letter page turned by /Rotate 90, a rectangle at x 100..300, y 500..600 (PDF user space)
    content = dd.stream(b"0 g 100 500 200 100 re f")
    page_object = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Rotate 90 /Contents 4 0 R >>"
    data = dd.write_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            page_object,
            content,
        ]
    )
    assert documents.probe(data).page_sizes == ((792.0, 612.0),)
    for decode, size in (
        (documents.PageDecode(192), (768, 594)),  # the default: 4 x size_px on the longer side
        (documents.PageDecode(192, pdf_dpi=144), (1584, 1224)),  # 2 px a point
        (documents.PageDecode(192, pdf_dpi=144, max_side_px=396), (396, 306)),  # bounded: 0.5 px a point
    ):
        page = documents.decode_page(data, 1, decode)
        # Then the frame is the page as a viewer shows it: 792 x 612 pt, origin top left
        assert (page.frame.width, page.frame.height, page.frame.unit) == (792.0, 612.0, "pt")
        assert page.image.size == size
        sx, sy = page.scale
        x0, y0, x1, y1 = ink_box(page.image)
        # and the ink, mapped with the scale, is where the rotation puts it: x 500..600, y 100..300
        assert [x0 * sx, y0 * sy, x1 * sx, y1 * sy] == pytest.approx([500, 100, 600, 300], abs=2 * sx)


def test_decodes_are_bounded_and_counted_in_the_page_budget() -> None:
    default, dpi = documents.PageDecode(192), documents.PageDecode(192, pdf_dpi=300)
    # a pdf_dpi render is bounded by MAX_RENDER_SIDE_PX whatever the page (an A0 sheet: 3370 pt)
    assert default.pdf_pixels(842, 595) == 768 * 543
    assert dpi.pdf_pixels(842, 595) == 3509 * 2480
    a0 = dpi.pdf_scale(3370, 2384) * 3370
    assert a0 == pytest.approx(documents.MAX_RENDER_SIDE_PX)
    # pages count at the largest decode of the job's packages: 20 A4 pages at 300 dpi fit the budget,
    # 30 do not; at the default size all of them do
    a4 = documents.DocumentInfo("pdf", 30, ((842.0, 595.0),) * 30)
    assert len(documents.select_pages(a4, range(1, 21), decodes=[default, dpi])) == 20
    with pytest.raises(errors.DocumentTooLarge, match="budget"):
        documents.select_pages(a4, None, decodes=[default, dpi])
    assert len(documents.select_pages(a4, None, decodes=[default])) == 30
    # a raster page counts at its size within max_side_px
    scans = documents.DocumentInfo("tiff", 30, ((4961.0, 7016.0),) * 30)  # A2 at 300 dpi
    assert (
        len(documents.select_pages(scans, None, decodes=[documents.PageDecode(192, max_side_px=2000)])) == 30
    )
