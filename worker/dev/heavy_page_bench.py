"""Where a heavy page's work should run: main-process CPU per page of a detector-sized package, measured.

A text detector's page is a [3, 1248, 1760] FP32 input (26 MB, an A4 page at 150 dpi) and a [1, 1248,
1760] probability map back (8.8 MB), and its postprocess (DB boxes: threshold, contours, a score per box)
works on that map. The worker's event loop is its bottleneck (docs/performance.md "Per-job overhead"), so
what such a page costs the main process decides how many pages a worker can serve. This bench measures,
in one process standing for the worker's (``time.process_time``: every thread of it), per page:

- ``handoff``: the page's tensor coming back from a spawned pool process through the result pipe
  (unpickled here); ``handoff_shared_memory``: the same through a shared-memory block, as the worker's
  pool hands large items back (``pipeline.preprocessors``: written there, copied out here, unlinked);
  ``handoff_empty``: the round trip without the tensor.
- ``grpc``: one Triton request of the page through the worker's adapter (``inference.TritonModel``) over
  gRPC, against a tritonserver serving a stand-in graph of the detector's shapes (a channel mean and a
  sigmoid: the server's work is not measured here).
- ``shm``: the same through the adapter with both tensors in Triton system shared memory
  (``shared_memory.SharedTensors``: the copy in, the request, the copy out); ``shm_copy_in``: the copy of
  the page alone, which a pool process writing into the region would save.
- ``postprocess_loop``: the OCR detector's own postprocess (``text_detector/detection.py``,
  ``boxes_from_probabilities``) on a real PP-OCRv4 probability map of a generated drawing, in this
  process (``postprocess_loop_blocks_ms``: how long the event loop cannot run, a page);
  ``postprocess_pool``: the same in a pool process, this process's side (the map pickled and sent, the
  boxes back; ``map_to_pool``: the map's trip alone); ``postprocess_thread``: in a thread, with
  ``postprocess_thread_loop_late_*_ms`` how late a 1 ms timer of the event loop fired meanwhile (the GIL
  the postprocess holds).

    .venv/bin/python -m worker.dev.heavy_page_bench [--pages 20]

The last line is JSON. Needs the local stack's ``.venv-triton`` and the OCR packages' requirements (the
``dev`` extra); the detector graph comes from rapidocr-onnxruntime's wheel (``ocr_pipeline``).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import functools
import json
import multiprocessing
import os
import pickle
import statistics
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from worker.dev import ocr_eval, ocr_pipeline
from worker.dev.devstack.tritonserver import TritonServer
from worker.runtime.model_packages.handlers import Preprocessed
from worker.runtime.model_packages.items import PageItems
from worker.runtime.pipeline import preprocessors

#: The detector's input and output for an A4 page at 150 dpi, landscape (docs/ocr.md "For the runtime").
HEIGHT: Final = 1248
WIDTH: Final = 1760
MODEL: Final = "heavy_page"

HANDLER = textwrap.dedent(
    """
    def preprocess(data, params):
        raise NotImplementedError("served for the bench only")


    def postprocess(outputs, params):
        return {"heavy": {}}
    """
)

TOML = f"""
[model]
name = "{MODEL}"
version = "1"
max_batch_size = 2
preferred_batch_size = 1
instances = 1

[[inputs]]
name = "x"
dtype = "FP32"
shape = [3, -1, -1]
min_shape = [3, 32, 32]
opt_shape = [3, {HEIGHT}, {WIDTH}]
max_shape = [3, 2048, 2048]

[[outputs]]
name = "map"
dtype = "FP32"
shape = [1, -1, -1]

[[analyses]]
name = "heavy"
outputs = ["map"]

[parity]
max_abs_error = 0.01
reference_inputs = ["model.toml"]
"""


def stand_in_onnx(path: Path) -> None:
    """``map = sigmoid(mean over channels of x)``: the detector's shapes, next to none of its work."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x", "axis"], ["mean"], keepdims=1),
            helper.make_node("Sigmoid", ["mean"], ["map"]),
        ],
        "heavy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("map", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "axis")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8  # readable by the onnxruntime in tritonserver's venv too
    onnx.save(model, str(path))


def write_package(root: Path) -> Path:
    folder = root / MODEL
    folder.mkdir(parents=True)
    stand_in_onnx(folder / "model.onnx")
    (folder / "handler.py").write_text(HANDLER, encoding="utf-8")
    (folder / "model.toml").write_text(TOML, encoding="utf-8")
    return root


def page_tensor(seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).random((3, HEIGHT, WIDTH), dtype=np.float32)


def _make_page() -> np.ndarray[Any, Any]:
    return page_tensor()


def _make_shipped_page() -> Preprocessed:
    """The page as a pool process hands it back to the worker (``preprocessors``: in shared memory)."""
    return preprocessors._shipped(Preprocessed(PageItems(({"x": page_tensor()},)), None))


def _nothing() -> None:
    return None


def cpu_ms_per_call(call: Callable[[], object], count: int) -> float:
    """Mean CPU of this process (every thread) per call, in ms."""
    call()  # warm
    started = time.process_time()
    for _ in range(count):
        call()
    return (time.process_time() - started) * 1000.0 / count


def measure_handoff(count: int) -> dict[str, float]:
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return {
            "handoff": cpu_ms_per_call(lambda: pool.submit(_make_page).result(), count),
            "handoff_shared_memory": cpu_ms_per_call(
                lambda: preprocessors._received(pool.submit(_make_shipped_page).result()), count
            ),
            "handoff_empty": cpu_ms_per_call(lambda: pool.submit(_nothing).result(), count),
        }


async def _transport(url: str, models: Path, count: int) -> dict[str, float]:
    """``inference.TritonModel.infer`` of one page: over gRPC, then through shared memory (the worker's
    adapter, both tensors and the copies in and out included); and the raw copy into a region."""
    from worker.runtime.inference import TritonModel  # noqa: PLC0415 - the worker extra
    from worker.runtime.model_packages.declaration import read_declaration  # noqa: PLC0415

    declaration = read_declaration(models / MODEL)
    batch = {"x": page_tensor()[np.newaxis]}
    figures = {}
    for key, min_bytes in (("grpc", 0), ("shm", 1 << 20)):
        model = TritonModel(url, declaration, timeout_s=60, shared_memory_min_bytes=min_bytes)
        await model.wait_ready(timeout_s=120)
        try:
            assert model.shared_memory == (min_bytes > 0), "Triton could not map the bench's memory"
            await model.infer(batch, interactive=False)  # the first of a shape learns its output sizes
            infer = functools.partial(model.infer, batch, interactive=False)
            figures[key] = await _async_cpu_ms(infer, count)
        finally:
            await model.close()
    region = np.empty_like(batch["x"])
    figures["shm_copy_in"] = cpu_ms_per_call(lambda: np.copyto(region, batch["x"]), count)
    return figures


async def _async_cpu_ms(call: Callable[[], Any], count: int) -> float:
    await call()  # warm
    started = time.process_time()
    for _ in range(count):
        await call()
    return (time.process_time() - started) * 1000.0 / count


def probability_map() -> tuple[np.ndarray[Any, Any], Any]:
    """A real PP-OCRv4 map of a generated drawing at A4 150 dpi, and its ``DetectionInput``."""
    detection = ocr_pipeline.detection_ops()
    import rapidocr_onnxruntime  # noqa: PLC0415 - the dev extra: the wheel holds the graph

    graph = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"
    page = ocr_eval.generated_pages(1, seed=3)[0]
    prepared = detection.detection_input(page.image)
    session = ocr_pipeline.session(graph)
    (probabilities,) = session.run(None, {"x": prepared.tensor[np.newaxis]})
    return probabilities[0], prepared


def _postprocess(probabilities: np.ndarray[Any, Any], prepared: Any) -> int:
    detection = ocr_pipeline.detection_ops()
    return len(detection.boxes_from_probabilities(probabilities, prepared).scores)


def _postprocess_pickled(probabilities: np.ndarray[Any, Any], prepared: bytes) -> int:
    """``_postprocess`` in a pool process: the detector's module is loaded before its record unpickles."""
    ocr_pipeline.detection_ops()
    return _postprocess(probabilities, pickle.loads(prepared))


def _shape_of(array: np.ndarray[Any, Any]) -> tuple[int, ...]:
    return tuple(array.shape)


def measure_postprocess(count: int) -> dict[str, float]:
    probabilities, prepared = probability_map()
    figures = {
        "postprocess_loop": cpu_ms_per_call(lambda: _postprocess(probabilities, prepared), count),
        "boxes": float(_postprocess(probabilities, prepared)),
    }
    spawn = multiprocessing.get_context("spawn")
    # what a pool's postprocess needs of the page besides the map (its frame), not the input tensor
    prepared_bytes = pickle.dumps(dataclasses.replace(prepared, tensor=np.zeros((3, 1, 1), np.float32)))
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        figures["postprocess_pool"] = cpu_ms_per_call(
            lambda: pool.submit(_postprocess_pickled, probabilities, prepared_bytes).result(), count
        )
        figures["map_to_pool"] = cpu_ms_per_call(
            lambda: pool.submit(_shape_of, probabilities).result(), count
        )
    figures.update(asyncio.run(_threaded(probabilities, prepared, count)))
    return figures


async def _threaded(probabilities: np.ndarray[Any, Any], prepared: Any, count: int) -> dict[str, float]:
    """Postprocess in a thread: this process's CPU, and the event loop's longest delay meanwhile (a 1 ms
    timer's lateness: how long the GIL kept the loop from running)."""
    await asyncio.to_thread(_postprocess, probabilities, prepared)  # warm
    started = time.process_time()
    for _ in range(count):
        await asyncio.to_thread(_postprocess, probabilities, prepared)
    cpu_ms = (time.process_time() - started) * 1000.0 / count
    late: list[float] = []
    done = asyncio.Event()

    async def timer() -> None:
        while not done.is_set():
            due = time.monotonic() + 0.001
            await asyncio.sleep(0.001)
            late.append(time.monotonic() - due)

    ticking = asyncio.create_task(timer())
    for _ in range(count):
        await asyncio.to_thread(_postprocess, probabilities, prepared)
    done.set()
    await ticking
    in_loop: list[float] = []
    for _ in range(count):  # the same page in the loop: the loop cannot run for its whole length
        begun = time.monotonic()
        _postprocess(probabilities, prepared)
        in_loop.append(time.monotonic() - begun)
    return {
        "postprocess_thread": cpu_ms,
        "postprocess_thread_loop_late_max_ms": max(late) * 1000.0,
        "postprocess_thread_loop_late_p50_ms": statistics.median(late) * 1000.0,
        "postprocess_loop_blocks_ms": statistics.median(in_loop) * 1000.0,
    }


def run(pages: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="heavy-page-") as work:
        models = write_package(Path(work) / "models")
        server = TritonServer(models_dir=models, work_dir=Path(work) / "triton")
        server.start(timeout_s=240)
        try:
            transport = asyncio.run(_transport(server.grpc_url, models, pages))
        finally:
            server.stop()
    figures: dict[str, Any] = {**measure_handoff(pages), **transport, **measure_postprocess(pages)}
    rounded = {key: round(value, 2) for key, value in figures.items()}
    return {
        "bench": "heavy_page",
        "page": [3, HEIGHT, WIDTH],
        "input_mb": round(3 * HEIGHT * WIDTH * 4 / 1e6, 1),
        "output_mb": round(HEIGHT * WIDTH * 4 / 1e6, 1),
        "pages": pages,
        "cpu_ms_per_page": rounded,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pages", type=int, default=20, help="calls per figure (default 20)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.pages)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
