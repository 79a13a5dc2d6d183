"""The bench's page phase: CPU per page of the worker's own preprocess call for a PNG, the
same drawing as a one-page raster PDF (Pillow's writer, as a scanner makes them) and a vector PDF page
(Flate content streams, as CAD exports them).

It runs in a spawned process of its own, as the worker's preprocess pool does: a PDF page renders in a
forked child (``worker.runtime.documents``), which is only safe from a process without threads, and the
child's CPU is counted (``RUSAGE_CHILDREN``) with the parent's.
"""

from __future__ import annotations

import concurrent.futures
import io
import multiprocessing
import resource

from PIL import Image

from worker.dev import drawing_documents
from worker.runtime.model_packages import handlers, loader

#: What the phase measures, each a one-page document of the bench's drawings.
PAGE_KINDS = ("png", "pdf_raster", "pdf_vector")


def page_cpu_ms(images: list[bytes], count: int) -> dict[str, float]:
    """Mean CPU ms per page of ``handlers.run_preprocess`` (drawing package) for each of PAGE_KINDS."""
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
        return pool.submit(_measure, images, count).result()


def _measure(images: list[bytes], count: int) -> dict[str, float]:
    folder = str(loader.BUNDLED_MODELS_DIR / "drawing_analyzer")
    documents = {
        "png": images,
        "pdf_raster": [drawing_documents.pdf_from_images([Image.open(io.BytesIO(b))]) for b in images],
        "pdf_vector": [drawing_documents.vector_pdf(1)],
    }
    figures = {}
    for kind in PAGE_KINDS:
        items = documents[kind]
        handlers.run_preprocess(folder, items[0], {"page": 1})  # warm: imports, the package's handler
        before = _cpu_s()
        for index in range(count):
            handlers.run_preprocess(folder, items[index % len(items)], {"page": 1})
        figures[kind] = round((_cpu_s() - before) * 1000 / count, 2)
    return figures


def _cpu_s() -> float:
    """This process's CPU and its waited-for children's (the PDF render sandboxes), in seconds."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
