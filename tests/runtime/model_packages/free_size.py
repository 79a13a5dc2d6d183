"""A page package of free size, written as a new user would from docs/models.md: its input is the page
itself (``shape = [1, -1, -1]``, the page reduced to at most ``SIDE_PX`` a side, aspect kept), and its one
analysis is the page's mean darkness computed by a one-node ONNX graph.

Pages of different sizes give tensors of different shapes, so the worker must never stack them into one
request. It is not a drawing model: a uniform grey page is a page like any other to it.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import onnx
from onnx import TensorProto, helper
from PIL import Image

#: The longest side, in pixels, of the page the handler hands to the model.
SIDE_PX = 48

HANDLER = textwrap.dedent(
    """
    import numpy as np

    SIDE_PX = 48

    def preprocess_page(page, params):
        image = page.image.copy()
        image.thumbnail((SIDE_PX, SIDE_PX))  # aspect kept: a page's shape follows its own
        return {"PAGE": ((255.0 - np.asarray(image, dtype=np.float32)) / 255.0)[np.newaxis]}

    def postprocess(outputs, params):
        return {params["analyses"][0]: {"darkness": round(float(outputs["DARKNESS"][0]), 5)}}
    """
)


def declaration(name: str, analysis: str, *, blank: str | None = None) -> str:
    """``model.toml`` of a free-size package; ``blank``: its ``[pages] blank`` policy (None: the default)."""
    policy = "" if blank is None else f'blank = "{blank}"\n'
    return (
        f'[model]\nname = "{name}"\nversion = "1"\n'
        "max_batch_size = 8\npreferred_batch_size = 8\ninstances = 1\n\n"
        '[[inputs]]\nname = "PAGE"\ndtype = "FP32"\nshape = [1, -1, -1]\n'
        f"min_shape = [1, 1, 1]\nmax_shape = [1, {SIDE_PX}, {SIDE_PX}]\n\n"
        '[[outputs]]\nname = "DARKNESS"\ndtype = "FP32"\nshape = [1]\n\n'
        f'[[analyses]]\nname = "{analysis}"\noutputs = ["DARKNESS"]\n\n'
        '[limits]\nformats = ["PNG", "JPEG", "TIFF", "PDF"]\n\n'
        f"[pages]\nsize_px = {SIDE_PX}\n{policy}\n"
        '[parity]\nmax_abs_error = 0.001\nreference_inputs = ["reference/*.png"]\n'
    )


def darkness_onnx(path: Path) -> None:
    """``DARKNESS[n] = mean over the page of PAGE[n]``: free height and width, dynamic batch."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["PAGE"], ["DARKNESS"], axes=[2, 3], keepdims=0)],
        "darkness",
        [helper.make_tensor_value_info("PAGE", TensorProto.FLOAT, ["batch", 1, "height", "width"])],
        [helper.make_tensor_value_info("DARKNESS", TensorProto.FLOAT, ["batch", 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by the onnxruntime in tritonserver's venv too
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_package(
    root: Path, name: str = "sizes", analysis: str = "darkness", *, blank: str | None = None
) -> Path:
    """``root/<name>/``: model.toml, model.onnx, handler.py and two reference pages of different shapes."""
    folder = root / name
    (folder / "reference").mkdir(parents=True)
    darkness_onnx(folder / "model.onnx")
    (folder / "handler.py").write_text(HANDLER, encoding="utf-8")
    (folder / "model.toml").write_text(declaration(name, analysis, blank=blank), encoding="utf-8")
    (folder / "reference" / "landscape.png").write_bytes(png(page((90, 60))))
    (folder / "reference" / "portrait.png").write_bytes(png(page((60, 90))))
    return folder


def page(size: tuple[int, int], *, paper: int = 250, ink: int = 20) -> Image.Image:
    """A mode ``L`` page of ``size`` with a frame and a cross of ``ink`` on ``paper``."""
    from PIL import ImageDraw  # noqa: PLC0415

    image = Image.new("L", size, paper)
    draw = ImageDraw.Draw(image)
    width, height = size
    line = max(1, min(size) // 30)
    draw.rectangle((line, line, width - 1 - line, height - 1 - line), outline=ink, width=line)
    draw.line((0, 0, width - 1, height - 1), fill=ink, width=line)
    draw.line((0, height - 1, width - 1, 0), fill=ink, width=line)
    return image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
