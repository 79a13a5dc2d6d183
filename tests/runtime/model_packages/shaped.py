"""Packages of free sizes written by a test: an OCR-shaped chain of two small ONNX graphs made here.

- ``detector``: input ``image/x.0`` FP32 [1, H, W], both sizes free within bounds; outputs the
  probability map ``map/sigmoid:0`` [1, H, W] (sigmoid(4x - 2): 0.88 on ink, 0.12 on paper) and
  ``stats.pool`` [2] (the image's mean and max). Its input is a JSON page: a size and ink boxes; its
  preprocess returns a ``Prepared`` whose context carries the boxes to postprocess (never through the
  graph), which answers ``regions``: the boxes whose mean probability is over 0.5, and the page size read
  from ``params["item_shapes"]``.
- ``reader``: needs ``regions``; a fan-out package: one crop [1, 8, w] per region (w free, bucketed to
  16/32/64, padded with 0), output ``columns`` [w] (each column's ink); its postprocess gets the list of
  the crops' outputs and undoes the pad with the item shapes: ``text``, whose ``lines`` hold each
  crop's box, width and ink.

The tensor names carry ``/``, ``.`` and ``:`` as real graphs' do (PP-OCR's ``save_infer_model/...``).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DETECTOR_INPUT = "image/x.0"
DETECTOR_MAP = "map/sigmoid:0"
DETECTOR_STATS = "stats.pool"

#: Reference pages: a size and ink boxes (x0, y0, x1, y1), every box 8 rows high.
PAGES = (
    {"width": 64, "height": 40, "boxes": [[4, 4, 20, 12], [10, 20, 40, 28]]},
    {"width": 96, "height": 32, "boxes": [[2, 2, 90, 10], [30, 16, 46, 24], [50, 16, 55, 24]]},
)


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by the onnxruntime in tritonserver's venv too
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def detector_onnx(path: Path) -> None:
    """``map = sigmoid(4 x - 2)``, ``stats = [mean(x), max(x)]``; batch, height and width free."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", [DETECTOR_INPUT, "four"], ["scaled"]),
            helper.make_node("Sub", ["scaled", "two"], ["shifted"]),
            helper.make_node("Sigmoid", ["shifted"], [DETECTOR_MAP]),
            helper.make_node("ReduceMean", [DETECTOR_INPUT], ["mean"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("ReduceMax", [DETECTOR_INPUT], ["max"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Unsqueeze", ["mean", "axis1"], ["mean1"]),
            helper.make_node("Unsqueeze", ["max", "axis1"], ["max1"]),
            helper.make_node("Concat", ["mean1", "max1"], [DETECTOR_STATS], axis=1),
        ],
        "detector",
        [helper.make_tensor_value_info(DETECTOR_INPUT, TensorProto.FLOAT, ["batch", 1, "height", "width"])],
        [
            helper.make_tensor_value_info(DETECTOR_MAP, TensorProto.FLOAT, ["batch", 1, "height", "width"]),
            helper.make_tensor_value_info(DETECTOR_STATS, TensorProto.FLOAT, ["batch", 2]),
        ],
        initializer=[
            numpy_helper.from_array(np.array(4.0, dtype=np.float32), "four"),
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    _save(graph, path)


def reader_onnx(path: Path) -> None:
    """``columns = sum of each column of the crop``; batch and width free."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["crop", "rows"], ["columns"], keepdims=0)],
        "reader",
        [helper.make_tensor_value_info("crop", TensorProto.FLOAT, ["batch", 1, 8, "width"])],
        [helper.make_tensor_value_info("columns", TensorProto.FLOAT, ["batch", "width"])],
        initializer=[numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "rows")],
    )
    _save(graph, path)


RENDER = textwrap.dedent(
    """
    def render(spec):
        image = np.zeros((1, spec["height"], spec["width"]), dtype=np.float32)
        for x0, y0, x1, y1 in spec["boxes"]:
            image[0, y0:y1, x0:x1] = 1.0
        return image
    """
)

DETECTOR_HANDLER = (
    textwrap.dedent(
        """
        import json

        import numpy as np

        from worker.runtime.model_packages.items import Prepared
        """
    )
    + RENDER
    + textwrap.dedent(
        """

        def preprocess(data, params):
            spec = json.loads(data)
            return Prepared([{"image/x.0": render(spec)}], context={"boxes": spec["boxes"]})


        def postprocess(outputs, params):
            prob = outputs["map/sigmoid:0"][0]
            found = []
            for x0, y0, x1, y1 in params["context"]["boxes"]:
                score = float(prob[y0:y1, x0:x1].mean())
                if score > 0.5:
                    found.append({"box": [x0, y0, x1, y1], "score": round(score, 6)})
            _, height, width = params["item_shapes"]["image/x.0"]
            mean = round(float(outputs["stats.pool"][0]), 6)
            return {"regions": {"boxes": found, "size": [width, height], "mean": mean}}
        """
    )
)

READER_HANDLER = (
    textwrap.dedent(
        """
        import json

        import numpy as np

        from worker.runtime.model_packages.items import Prepared
        """
    )
    + RENDER
    + textwrap.dedent(
        """

        def preprocess(data, params):
            image = render(json.loads(data))
            boxes = [region["box"] for region in params["needs"]["regions"]["boxes"]]
            crops = [{"crop": np.ascontiguousarray(image[:, y0:y0 + 8, x0:x1])} for x0, y0, x1, y1 in boxes]
            return Prepared(crops, context=boxes)


        def postprocess(outputs, params):
            lines = []
            for box, row, shapes in zip(params["context"], outputs, params["item_shapes"], strict=True):
                width = shapes["crop"][2]
                columns = row["columns"]
                lines.append({
                    "box": box,
                    "width": width,
                    "padded": int(columns.shape[0]),
                    "ink": round(float(columns[:width].sum()), 4),
                })
            return {"text": {"lines": lines}}
        """
    )
)

DETECTOR_TOML = """
[model]
name = "detector"
version = "1"
max_batch_size = 4
preferred_batch_size = 2
instances = 1

[[inputs]]
name = "image/x.0"
dtype = "FP32"
shape = [1, -1, -1]
min_shape = [1, 8, 8]
opt_shape = [1, 48, 64]
max_shape = [1, 256, 256]

[[outputs]]
name = "map/sigmoid:0"
dtype = "FP32"
shape = [1, -1, -1]

[[outputs]]
name = "stats.pool"
dtype = "FP32"
shape = [2]

[[analyses]]
name = "regions"
outputs = ["map/sigmoid:0", "stats.pool"]

[limits]
max_input_bytes = 4096
formats = ["JSON"]

[parity]
reference_inputs = ["reference/*.json"]

[parity.answers.regions]
boxes = { match = "box", min_iou = 0.9, max_abs_error = { score = 0.01 } }
size = "equal"
"""

READER_TOML = """
[model]
name = "reader"
version = "1"
max_batch_size = 8
preferred_batch_size = 4
instances = 1

[[inputs]]
name = "crop"
dtype = "FP32"
shape = [1, 8, -1]
min_shape = [1, 8, 1]
opt_shape = [1, 8, 32]
max_shape = [1, 8, 128]
buckets = [[1, 8, 16], [1, 8, 32], [1, 8, 64]]
pad_value = 0.0

[[outputs]]
name = "columns"
dtype = "FP32"
shape = [-1]

[[analyses]]
name = "text"
outputs = ["columns"]
needs = ["regions"]

[fan_out]
max_items = 8

[limits]
max_input_bytes = 4096
formats = ["JSON"]

[parity]
reference_inputs = ["reference/*.json"]

[parity.answers.text]
lines = { match = "box", min_iou = 0.99, equal = ["width"], max_abs_error = { ink = 0.01 } }
"""


def _write(folder: Path, onnx_writer: object, handler: str, toml: str) -> Path:
    (folder / "reference").mkdir(parents=True)
    assert callable(onnx_writer)
    onnx_writer(folder / "model.onnx")
    (folder / "handler.py").write_text(handler, encoding="utf-8")
    (folder / "model.toml").write_text(toml, encoding="utf-8")
    for index, page in enumerate(PAGES):
        (folder / "reference" / f"page{index}.json").write_text(json.dumps(page), encoding="utf-8")
    return folder


def write_detector(root: Path, *, toml: str = DETECTOR_TOML, handler: str = DETECTOR_HANDLER) -> Path:
    return _write(root / "detector", detector_onnx, handler, toml)


def write_reader(root: Path, *, toml: str = READER_TOML, handler: str = READER_HANDLER) -> Path:
    return _write(root / "reader", reader_onnx, handler, toml)


def write_chain(root: Path) -> tuple[Path, Path]:
    """``root/detector`` and ``root/reader`` (whose analysis needs the detector's)."""
    return write_detector(root), write_reader(root)
