"""RapidOCR's own pipeline over N pages with this machine's cores: pages/s and per-page latency.

The baseline the fleet's OCR is measured against (``make bench-ocr`` runs it beside the fleet, on the same
pages, in the same run). Two layouts, both RapidOCR 1.4.4's ``RapidOCR`` class with its default config:

- ``one_process``: one engine with onnxruntime's default threading (all cores for each graph run), the
  pages read one after another;
- ``processes``: ``P`` spawned processes (default: the CPU count), each an engine with one thread per
  graph, the pages handed out as processes free up.

Each layout reads every page once before the clock starts (warm sessions), then reads the N pages; the
result gives pages/s (N / wall time of the timed pass) and the per-page latency percentiles (the time a
page spends in ``RapidOCR.__call__``), and ``best`` names the layout with more pages/s.

    >>> figures = bench_rapidocr([np.asarray(image) for image in images])
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.shared import stats

Page = npt.NDArray[np.uint8]

_ENGINE: Any = None


def _engine(threads: int | None) -> Any:
    from rapidocr_onnxruntime import RapidOCR  # noqa: PLC0415 - a dev-only dependency, loaded on use

    return RapidOCR() if threads is None else RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)


def _read_timed(engine: Any, page: Page) -> float:
    started = time.perf_counter()
    engine(page)
    return time.perf_counter() - started


def one_process(pages: Sequence[Page]) -> dict[str, Any]:
    """Every page in turn through one engine with onnxruntime's default threading."""
    engine = _engine(None)
    for page in pages:  # warm: session allocations and the shapes these pages give
        engine(page)
    started = time.perf_counter()
    latencies = [_read_timed(engine, page) for page in pages]
    return _figures("one_process", len(pages), time.perf_counter() - started, latencies, threads=None)


def _init_worker() -> None:
    global _ENGINE  # noqa: PLW0603 - one engine per pool process, made once
    _ENGINE = _engine(1)


def _read_in_worker(page: Page) -> float:
    return _read_timed(_ENGINE, page)


def processes(pages: Sequence[Page], count: int | None = None) -> dict[str, Any]:
    """The pages over ``count`` spawned processes (default: the CPU count), one graph thread each."""
    workers = count or os.cpu_count() or 1
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
    ) as pool:
        list(pool.map(_read_in_worker, [pages[i % len(pages)] for i in range(max(workers, len(pages)))]))
        started = time.perf_counter()
        latencies = list(pool.map(_read_in_worker, pages))
        wall = time.perf_counter() - started
    return _figures("processes", len(pages), wall, latencies, threads=1, processes=workers)


def _figures(
    layout: str,
    pages: int,
    wall_s: float,
    latencies: Sequence[float],
    *,
    threads: int | None,
    processes: int = 1,
) -> dict[str, Any]:
    latency_ms = [x * 1000 for x in latencies]
    return {
        "layout": layout,
        "processes": processes,
        "threads_per_process": threads or "onnxruntime default",
        "pages": pages,
        "pages_per_s": round(pages / wall_s, 3) if wall_s > 0 else None,
        "latency_ms": {k: round(v, 1) for k, v in stats.percentiles(latency_ms).items()},
    }


def bench_rapidocr(pages: Sequence[Page], *, process_count: int | None = None) -> dict[str, Any]:
    """Both layouts on ``pages``; ``best`` is the one with more pages/s."""
    layouts = [one_process(pages), processes(pages, process_count)]
    best = max(layouts, key=lambda f: f["pages_per_s"] or 0.0)
    return {
        "rapidocr": {f["layout"]: f for f in layouts},
        "best": best["layout"],
        "cpu_count": os.cpu_count(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m worker.dev.ocr_bench``: both layouts on the OCR evaluation drawings, one JSON line."""
    import argparse  # noqa: PLC0415
    import json  # noqa: PLC0415

    from worker.dev import ocr_eval  # noqa: PLC0415 - the evaluation set

    parser = argparse.ArgumentParser(description="RapidOCR's own pipeline: pages/s and latency")
    parser.add_argument("--pages", type=int, default=12, help="evaluation drawings (half with extra text)")
    parser.add_argument(
        "--processes", type=int, help="processes of the multi-process layout (default: cores)"
    )
    args = parser.parse_args(argv)
    pages = ocr_eval.evaluation_set(args.pages - args.pages // 2, args.pages // 2)[: args.pages]
    print(json.dumps(bench_rapidocr([p.image for p in pages], process_count=args.processes), sort_keys=True))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
