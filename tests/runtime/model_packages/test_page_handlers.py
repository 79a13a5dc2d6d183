"""Handlers and pages (issue 22): ``preprocess_page`` and/or ``preprocess``, the page size a package
declares, and what the pool's ``run_preprocess`` hands each kind of handler for each kind of document."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from worker.dev import drawing_documents
from worker.runtime import documents
from worker.runtime.model_packages import handlers
from worker.runtime.model_packages.declaration import PackageInvalid, read_declaration
from worker.runtime.model_packages.loader import BUNDLED_MODELS_DIR, load_package

from .tiny import declaration, write_package

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: A page handler: FEATURES = (page number, content, decoded width, decoded height).
PAGE_HANDLER = textwrap.dedent(
    """
    import numpy as np

    def preprocess_page(page, params):
        assert params["page"] == page.number
        width, height = page.image.size
        content = page.measure.content
        return {"FEATURES": np.asarray([page.number, content, width, height], dtype=np.float32)}

    def postprocess(outputs, params):
        return {"tiny_score": {"label": "low", "scores": outputs["SCORES"].tolist()}}
    """
)
#: A bytes handler: FEATURES = (is PNG, byte length, page number, 0).
BYTES_HANDLER = textwrap.dedent(
    """
    import numpy as np

    def preprocess(data, params):
        is_png = float(data[:8] == b"\\x89PNG\\r\\n\\x1a\\n")
        return {"FEATURES": np.asarray([is_png, len(data), params["page"], 0], dtype=np.float32)}

    def postprocess(outputs, params):
        return {"tiny_score": {"label": "low", "scores": outputs["SCORES"].tolist()}}
    """
)


def sheet(*, ink: bool) -> Image.Image:
    image = Image.new("L", (600, 400), 255)
    if ink:
        ImageDraw.Draw(image).rectangle((100, 100, 500, 300), outline=0, width=12)
    return image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_package_with_only_preprocess_page_gets_each_page_decoded_at_its_size(tmp_path: Path) -> None:
    toml = declaration() + "\n[pages]\nsize_px = 300\n"
    folder = write_package(tmp_path, handler=PAGE_HANDLER, toml=toml)
    package = load_package(folder)
    assert package.preprocess_page is not None and package.declaration.page_size_px == 300
    document = drawing_documents.multipage_tiff([sheet(ink=False), sheet(ink=True)])
    blank = handlers.run_preprocess(str(folder), document, {"page": 1})
    drawn = handlers.run_preprocess(str(folder), document, {"page": 2})
    assert blank.page.items[0]["FEATURES"][0] == 1.0 and drawn.page.items[0]["FEATURES"][0] == 2.0
    assert blank.measure is not None and blank.measure.blank and blank.measure.content == 0.0
    assert drawn.measure is not None and not drawn.measure.blank and drawn.measure.content > 0.01
    assert float(drawn.page.items[0]["FEATURES"][1]) == pytest.approx(drawn.measure.content)
    # and a decode not asked to measure the page returns none (the handler may still read it)
    assert handlers.run_preprocess(str(folder), document, {"page": 2}, measure=False).measure is None
    # and the bytes entry point the tools use (parity, fleet models check) decodes the same page
    via_bytes = package.preprocess(document, {"page": 2})
    assert list(via_bytes["FEATURES"]) == list(drawn.page.items[0]["FEATURES"])


def test_a_bytes_package_gets_a_one_page_inputs_own_bytes_and_a_pages_png_otherwise(tmp_path: Path) -> None:
    folder = write_package(tmp_path, handler=BYTES_HANDLER)
    assert load_package(folder).preprocess_page is None
    single = png(sheet(ink=True))
    own = handlers.run_preprocess(str(folder), single, {"page": 1})
    assert list(own.page.items[0]["FEATURES"]) == [1.0, float(len(single)), 1.0, 0.0]
    assert own.measure is None  # no page decoded here: never taken as blank
    document = drawing_documents.multipage_tiff([sheet(ink=True), sheet(ink=False)])
    second = handlers.run_preprocess(str(folder), document, {"page": 2})
    assert second.page.items[0]["FEATURES"][0] == 1.0 and second.page.items[0]["FEATURES"][2] == 2.0
    assert second.measure is not None and second.measure.blank


def test_a_handler_without_either_preprocess_is_refused_naming_the_package(tmp_path: Path) -> None:
    handler = "def postprocess(outputs, params):\n    return {}\n"
    with pytest.raises(PackageInvalid) as refused:
        load_package(write_package(tmp_path, handler=handler))
    assert refused.value.package == "tiny"
    assert "no preprocess_page() or preprocess() function" in str(refused.value)
    wrong = "def preprocess_page(page):\n    return {}\ndef postprocess(o, p):\n    return {}\n"
    with pytest.raises(PackageInvalid, match=r"preprocess_page\(page, params\)"):
        load_package(write_package(tmp_path / "b", handler=wrong))


def test_the_page_size_defaults_to_the_first_inputs_image_side_and_is_bounded(tmp_path: Path) -> None:
    assert read_declaration(BUNDLED_MODELS_DIR / "drawing_analyzer").page_size_px == 192
    assert read_declaration(BUNDLED_MODELS_DIR / "symbol_recognizer").page_size_px == 384
    for name in ("drawing_analyzer", "symbol_recognizer"):
        assert "PDF" in read_declaration(BUNDLED_MODELS_DIR / name).limits.formats
    folder = write_package(tmp_path, toml=declaration() + "\n[pages]\nsize_px = 4\n")
    with pytest.raises(PackageInvalid, match=r"pages\.size_px"):
        read_declaration(folder)


def test_the_pdf_resolution_and_the_max_side_are_declared_checked_and_reach_the_decode(
    tmp_path: Path,
) -> None:
    # The bundled packages declare neither: their pages decode exactly as before
    for name in ("drawing_analyzer", "symbol_recognizer"):
        bundled = read_declaration(BUNDLED_MODELS_DIR / name)
        assert (bundled.pdf_dpi, bundled.max_side_px) == (None, None)
    # A package declaring both gets them in its decode
    toml = declaration() + "\n[pages]\nsize_px = 300\npdf_dpi = 150\nmax_side_px = 2000\n"
    parsed = read_declaration(write_package(tmp_path, handler=PAGE_HANDLER, toml=toml))
    assert handlers.page_decode(parsed) == documents.PageDecode(300, pdf_dpi=150.0, max_side_px=2000)
    # Out of range, of the wrong type, or a key [pages] does not know: refused, naming the field
    for pages, field in (
        ("pdf_dpi = 5", r"pages\.pdf_dpi"),
        ("pdf_dpi = true", r"pages\.pdf_dpi"),
        ("max_side_px = 8", r"pages\.max_side_px"),
        ("max_side_px = 2000.5", r"pages\.max_side_px"),
        ("dpi = 150", r"\[pages\] has unknown keys \['dpi'\]"),
    ):
        folder = write_package(
            tmp_path / str(len(list(tmp_path.iterdir()))), toml=declaration() + f"\n[pages]\n{pages}\n"
        )
        with pytest.raises(PackageInvalid, match=field):
            read_declaration(folder)
