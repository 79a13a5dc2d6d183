"""Running a package's handler where the worker needs it, with its results checked.

``run_preprocess`` is what the preprocess pool's processes run for one page of a job's document: a
spawned process imports the package from its folder on first use (cached per process), decodes the page
(``documents.decode_page`` as the package's ``[pages]`` declares: ``page_decode``) for a
``preprocess_page`` handler, checks what the handler returned against the declaration there
(``items.check_prepared``: one item or a fan-out's 0..max_items, free sizes within their bounds, a context
that pickles) and pads each item to its bucket (``items.pad_item``), so a wrong shape or dtype never
reaches a batch and the event loop only stacks; it returns the items with their shapes before the pad,
the context, the page's frame and, when asked, its blank measure (``documents.blank``: one package's
decode measures a page). ``probe`` is the pool's ``documents.probe``: parsing an untrusted document's
structure runs there, never in the event loop's process. ``run_postprocess`` runs in the worker's event
loop and checks that the outputs are JSON and answer every asked analysis. A handler that misbehaves gets
a permanent error code for the job (``MODEL_PREPROCESS_FAILED`` / ``MODEL_OUTPUT_INVALID``, and
``TENSOR_OUT_OF_BOUNDS`` / ``TOO_MANY_ITEMS`` from the checks); the worker's own typed errors
(``IMAGE_UNDECODABLE`` ...) keep their code.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from worker.runtime import documents
from worker.runtime.model_packages import items
from worker.runtime.model_packages.declaration import Declaration
from worker.runtime.model_packages.loader import ModelPackage, load_package
from worker.shared import errors

Arrays = dict[str, np.ndarray[Any, Any]]


@functools.cache
def package_at(folder: str) -> ModelPackage:
    """The package in ``folder``, loaded once per process (the pool's processes import it by path)."""
    return load_package(Path(folder))


def warm(folders: tuple[str, ...]) -> None:
    """Import every package in this process now (the pool's warm-up), not on the first job."""
    for folder in folders:
        package_at(folder)


def page_decode(declaration: Declaration) -> documents.PageDecode:
    """How the package has pages decoded: its ``[pages]`` ``size_px``, ``pdf_dpi`` and ``max_side_px``."""
    return documents.PageDecode(declaration.page_size_px, declaration.pdf_dpi, declaration.max_side_px)


class Preprocessed(NamedTuple):
    """One page's items for one package (checked, padded to their buckets, with their shapes before the pad)
    and its context; the page's frame and its blank measure, when known.

    ``measure`` is None when not asked, and ``measure`` and ``frame`` are None when no page was decoded: a
    ``preprocess`` package reading a one-page input's bytes itself (such a page is never taken as blank).
    """

    page: items.PageItems
    measure: documents.PageMeasure | None
    frame: documents.Frame | None = None


def probe(data: bytes) -> documents.DocumentInfo:
    """``documents.probe`` in a pool process: the document's kind, page count and page sizes."""
    return documents.probe(data)


def run_preprocess(folder: str, data: bytes, params: dict[str, Any], *, measure: bool = True) -> Preprocessed:
    """Page ``params["page"]`` (default 1) of the document in ``data`` -> ``package_at(folder)``'s items, and
    with ``measure`` the page's blank measure (taken before the handler sees the page).

    A ``preprocess_page`` handler gets the page decoded as the package declares. A ``preprocess`` handler
    gets the input's own bytes when the format has one page (PNG, JPEG, ...: no decode here), else (TIFF,
    PDF) the PNG bytes of the decoded page.
    """
    package = package_at(folder)
    declaration = package.declaration
    number = int(params.get("page", 1))
    measured: documents.PageMeasure | None = None
    frame: documents.Frame | None = None
    if package.preprocess_page is not None or documents.may_have_pages(data):
        page = documents.decode_page(data, number, page_decode(declaration))
        measured = page.measure if measure else None
        frame = page.frame
    if package.preprocess_page is not None:
        returned = _handler_call(package, "preprocess_page", package.preprocess_page, page, params)
    else:
        if frame is not None:
            data = _png_bytes(page.image)
        returned = _handler_call(package, "preprocess", package.preprocess, data, params)
    checked = items.check_prepared(declaration, returned).padded(declaration.inputs)
    return Preprocessed(checked, measured, frame)


def measures_pages(package: ModelPackage, data: bytes) -> bool:
    """Whether ``run_preprocess`` decodes the input's pages for ``package`` (so it can measure them):
    a ``preprocess_page`` package always, a ``preprocess`` one for TIFF and PDF only."""
    return package.preprocess_page is not None or documents.may_have_pages(data)


def _handler_call(
    package: ModelPackage,
    name: str,
    function: Callable[[Any, dict[str, Any]], object],
    arg: Any,
    params: dict[str, Any],
) -> object:
    try:
        return function(arg, params)
    except errors.FleetError:
        raise
    except Exception as exc:
        raise errors.ModelPreprocessFailed(
            f"{package.name}: {name} raised {type(exc).__name__}: {str(exc)[:200]}"
        ) from None  # the cause may not pickle back from the pool process


def _png_bytes(image: Image.Image) -> bytes:
    """A decoded page as PNG (fast compression: it only travels to the package's own decode)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def run_postprocess(
    package: ModelPackage,
    outputs: Arrays | list[Arrays],
    params: dict[str, Any],
    analyses: tuple[str, ...],
) -> dict[str, Any]:
    """The outputs of ``analyses`` from the package's postprocess; anything else it returns is dropped.

    ``outputs``: one item's outputs, or the list of a fan-out package's items' outputs
    (``items.postprocess_outputs``).
    """
    try:
        result = package.postprocess(outputs, params)
    except Exception as exc:
        raise errors.ModelOutputInvalid(
            f"{package.name}: postprocess raised {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    if not isinstance(result, dict):
        raise errors.ModelOutputInvalid(
            f"{package.name}: postprocess returned {type(result).__name__}, not a dict keyed by analysis"
        )
    missing = [a for a in analyses if a not in result]
    if missing:
        raise errors.ModelOutputInvalid(f"{package.name}: postprocess returned no output for {missing}")
    answered = {a: result[a] for a in analyses}
    try:
        # allow_nan=False: NaN/Infinity are not JSON; the result document is written with the same rule.
        json.dumps(answered, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise errors.ModelOutputInvalid(f"{package.name}: postprocess output is not JSON: {exc}") from exc
    return answered
