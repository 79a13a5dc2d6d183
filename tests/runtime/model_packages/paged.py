"""Page packages written by a test, for fan-out and frames on pages the worker decodes (PNG, JPEG, TIFF,
PDF), and the documents they read.

- ``bars``: a fan-out package (``[fan_out] max_items = 8``, ``[pages] blank = "analyse"``). Its page is
  black bars 8 rows high, each from the left edge, on white paper (``bars_page``); preprocess_page gives one
  item per bar, the bar's ink as a crop [1, 8, w] (w free up to 128, bucketed to 16/32/64 and padded with
  0), and a context of the bars found, the page's decoded size and a value from the job's params.
  Its graph (``shaped.reader_onnx``) sums each column of a crop; postprocess undoes the pad with the item
  shapes and answers ``bars``: each bar's row, width and ink (8 x width when the row came back to the
  right bar), in page order, with the context's values. A page without bars gives no item.
- ``framer``: one item per page (blank pages too), ``[pages] size_px = 64``, ``pdf_dpi = 50``,
  ``max_side_px = 600``, so a large JPEG is decoded reduced by DCT scaling, a PNG or TIFF page over 600 px
  is reduced, and a PDF page renders at 50 dpi. preprocess_page finds the page's ink box in the decoded
  pixels and maps it to the page's frame with ``page.scale``; the box travels in the context, the graph
  echoes it as a tensor; it answers ``ink_box``: the box in the frame, the frame and the decoded size.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import onnx
from onnx import TensorProto, helper
from PIL import Image, ImageDraw

from worker.dev import drawing_documents

from . import shaped

#: A bar's height in rows, and the white rows between two bars.
BAR_ROWS = 8
BAR_GAP = 4
#: The ``framer`` package's decode: small size_px (a JPEG decodes at its smallest DCT scale that keeps
#: the max side), PDF at 50 dpi, every page's longer side at most 600 px.
FRAMER_PDF_DPI = 50
FRAMER_MAX_SIDE_PX = 600

BARS_HANDLER = textwrap.dedent(
    """
    import numpy as np

    from worker.runtime.model_packages.items import Prepared


    def preprocess_page(page, params):
        ink = np.asarray(page.image) < 128
        rows = ink.any(axis=1)
        bars, y = [], 0
        while y < len(rows):
            if not rows[y]:
                y += 1
                continue
            start = y
            while y < len(rows) and rows[y]:
                y += 1
            width = int(np.nonzero(ink[start:y].any(axis=0))[0].max()) + 1
            bars.append((start, width))
        items = [{"crop": ink[None, start:start + 8, :width].astype(np.float32)} for start, width in bars]
        context = {"bars": bars, "size": page.image.size, "note": params.get("note")}
        return Prepared(items, context=context)


    def postprocess(outputs, params):
        context = params["context"]
        lines = []
        for (y, width), row, shapes in zip(context["bars"], outputs, params["item_shapes"], strict=True):
            unpadded = shapes["crop"][2]
            columns = row["columns"]
            lines.append({
                "y": y,
                "width": unpadded,
                "padded": int(columns.shape[0]),
                "ink": float(columns[:unpadded].sum()),
                "pad_ink": float(columns[unpadded:].sum()),
            })
        return {"bars": {
            "lines": lines, "size": list(context["size"]), "note": context["note"], "page": params["page"]
        }}
    """
)

#: The reader's crop tensors (shaped.py): the same graph, the same bounds and buckets.
_CROP_TENSORS = shaped.READER_TOML[
    shaped.READER_TOML.index("[[inputs]]") : shaped.READER_TOML.index("[[analyses]]")
]

BARS_TOML = f"""
[model]
name = "bars"
version = "1"
max_batch_size = 8
preferred_batch_size = 8
instances = 1

{_CROP_TENSORS}
[[analyses]]
name = "bars"
outputs = ["columns"]

[fan_out]
max_items = 8

[pages]
blank = "analyse"

[limits]
formats = ["PNG", "TIFF"]

[parity]
max_abs_error = 0.001
reference_inputs = ["reference/*.png"]
"""

FRAMER_HANDLER = textwrap.dedent(
    """
    import numpy as np

    from worker.runtime.model_packages.items import Prepared


    def preprocess_page(page, params):
        ys, xs = np.nonzero(np.asarray(page.image) < 128)
        box_px = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
        sx, sy = page.scale
        box = [box_px[0] * sx, box_px[1] * sy, box_px[2] * sx, box_px[3] * sy]
        frame = page.frame
        context = {"box": box, "frame": [frame.width, frame.height, frame.unit], "decoded": page.image.size}
        return Prepared([{"BOX": np.asarray(box_px, dtype=np.float32)}], context=context)


    def postprocess(outputs, params):
        context = params["context"]
        return {"ink_box": {
            "box": [round(v, 2) for v in context["box"]],
            "frame": context["frame"],
            "decoded": list(context["decoded"]),
            "echo": [float(v) for v in outputs["ECHO"]],
        }}
    """
)

FRAMER_TOML = f"""
[model]
name = "framer"
version = "1"
max_batch_size = 4
preferred_batch_size = 4
instances = 1

[[inputs]]
name = "BOX"
dtype = "FP32"
shape = [4]

[[outputs]]
name = "ECHO"
dtype = "FP32"
shape = [4]

[[analyses]]
name = "ink_box"
outputs = ["ECHO"]

[pages]
blank = "analyse"  # a filled box on paper is not a line drawing: the blank measure is not the point here
size_px = 64
pdf_dpi = {FRAMER_PDF_DPI}
max_side_px = {FRAMER_MAX_SIDE_PX}

[limits]
formats = ["PNG", "JPEG", "TIFF", "PDF"]

[parity]
max_abs_error = 0.001
reference_inputs = ["reference/*.png"]
"""


def echo_onnx(path: Path) -> None:
    """``ECHO = BOX`` (an Identity), batch axis free."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["BOX"], ["ECHO"])],
        "framer",
        [helper.make_tensor_value_info("BOX", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("ECHO", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by the onnxruntime in tritonserver's venv too
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def bars_page(widths: list[int], *, width: int = 160) -> Image.Image:
    """A white page with one black bar per width, ``BAR_ROWS`` high, from the left edge, top to bottom."""
    height = max(16, len(widths) * (BAR_ROWS + BAR_GAP) + BAR_GAP)
    image = Image.new("L", (max(width, *widths, 1), height), 255)
    draw = ImageDraw.Draw(image)
    for index, bar in enumerate(widths):
        top = BAR_GAP + index * (BAR_ROWS + BAR_GAP)
        draw.rectangle((0, top, bar - 1, top + BAR_ROWS - 1), fill=0)
    return image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def tiff(pages: list[Image.Image]) -> bytes:
    return drawing_documents.multipage_tiff(pages)


def ink_page(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """White paper of ``size`` with a black rectangle covering pixels ``box`` (x0, y0, x1, y1: x1, y1
    excluded)."""
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=0)
    return image


def rotated_pdf(box_pt: tuple[float, float, float, float], *, rotate: int = 90) -> bytes:
    """A one-page US-letter PDF (612 x 792 pt) with ``/Rotate``, a filled rectangle at ``box_pt`` (x0, y0,
    x1, y1 in PDF user space: origin bottom left, y up)."""
    x0, y0, x1, y1 = box_pt
    content = drawing_documents.stream(b"0 g %.1f %.1f %.1f %.1f re f" % (x0, y0, x1 - x0, y1 - y0))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Rotate %d /Resources << >> /Contents 4 0 R >>"
        % rotate,
        content,
    ]
    return drawing_documents.write_pdf(objects)


def _write(folder: Path, onnx_writer: object, handler: str, toml: str, reference: bytes) -> Path:
    (folder / "reference").mkdir(parents=True)
    assert callable(onnx_writer)
    onnx_writer(folder / "model.onnx")
    (folder / "handler.py").write_text(handler, encoding="utf-8")
    (folder / "model.toml").write_text(toml, encoding="utf-8")
    (folder / "reference" / "page.png").write_bytes(reference)
    return folder


def write_bars(root: Path) -> Path:
    return _write(root / "bars", shaped.reader_onnx, BARS_HANDLER, BARS_TOML, png(bars_page([10, 30, 50])))


def write_framer(root: Path) -> Path:
    reference = png(ink_page((300, 200), (40, 30, 120, 90)))
    return _write(root / "framer", echo_onnx, FRAMER_HANDLER, FRAMER_TOML, reference)


def bars_expected(widths: list[int]) -> list[dict[str, object]]:
    """What ``bars`` answers for ``bars_page(widths)``: each bar's row, width, bucket and ink."""
    buckets = (16, 32, 64)
    return [
        {
            "y": BAR_GAP + index * (BAR_ROWS + BAR_GAP),
            "width": width,
            "padded": next((b for b in buckets if width <= b), width),
            "ink": float(BAR_ROWS * width),
            "pad_ink": 0.0,
        }
        for index, width in enumerate(widths)
    ]
