"""The FP16 stand-in graph (onnx_tools.fp16_graph): constants beyond the converter's range can stay FP32."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from worker.runtime.model_packages import onnx_tools


def scaled_graph(path: Path, divisor: float) -> None:
    """``Y = X / divisor`` with the divisor in a Constant node (the way exporters write BatchNorm stats)."""
    constant = helper.make_node(
        "Constant", [], ["D"], value=helper.make_tensor("d", TensorProto.FLOAT, [], [divisor])
    )
    graph = helper.make_graph(
        [constant, helper.make_node("Div", ["X", "D"], ["Y"])],
        "scaled",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_a_constant_beyond_the_converters_range_stays_fp32_when_asked(tmp_path: Path) -> None:
    # Given a graph that divides by 2e5, beyond the 1e4 onnxconverter-common clamps FP16 constants to
    scaled_graph(tmp_path / "model.onnx", 2e5)
    x = np.array([[2e5, 4e5, 1e5, 6e5]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter warns about the value it clamps
        plain = onnx_tools.fp16_graph(tmp_path / "model.onnx", tmp_path / "plain.onnx")
        kept = onnx_tools.fp16_graph(tmp_path / "model.onnx", tmp_path / "kept.onnx", keep_out_of_range=True)
    # When both run, then the plain conversion answers 20 times too much and the kept one answers right
    (y_plain,) = onnx_tools.session(plain).run(None, {"X": x})
    (y_kept,) = onnx_tools.session(kept).run(None, {"X": x})
    assert np.allclose(y_plain, x / 1e4, rtol=1e-3)
    assert np.allclose(y_kept, [[1, 2, 0.5, 3]], rtol=1e-3)
    # and the divisor is an FP32 initializer of the kept graph (no longer a Constant node)
    graph = onnx.load(str(kept)).graph
    (divisor,) = [init for init in graph.initializer if init.name == "D"]
    assert divisor.data_type == TensorProto.FLOAT and "Constant" not in [n.op_type for n in graph.node]
