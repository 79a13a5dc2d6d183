"""Run a package through its ONNX graph on CPU (onnxruntime): the reference the parity gate compares
against, ``fleet models check``, and the FP16 candidate that exercises the gate without a GPU.

Needs the ``models`` extra (onnxruntime, onnx, onnxconverter-common); imported only by the commands and
the engine step that use it, never by the worker's job path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from worker.runtime.model_packages.declaration import Declaration, PackageInvalid
from worker.runtime.model_packages.loader import ModelPackage
from worker.runtime.model_packages.tensors import Tensor

Arrays = dict[str, np.ndarray[Any, Any]]

#: onnxruntime's type names for the declaration's dtypes.
_ORT_TYPES = {
    "FP32": "tensor(float)",
    "FP16": "tensor(float16)",
    "INT64": "tensor(int64)",
    "INT32": "tensor(int32)",
    "INT8": "tensor(int8)",
    "UINT8": "tensor(uint8)",
    "BOOL": "tensor(bool)",
}


def session(path: Path) -> Any:
    import onnxruntime as ort  # noqa: PLC0415 - the models extra

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_graph(package: ModelPackage) -> None:
    """The declaration's tensors must be the graph's: names, dtypes and (non-batch) shapes."""
    graph = session(package.model_path)
    d = package.declaration
    _compare(d, "input", d.inputs, graph.get_inputs())
    _compare(d, "output", d.outputs, graph.get_outputs())


def _compare(d: Declaration, kind: str, declared: Sequence[Tensor], actual: Sequence[Any]) -> None:
    found = {t.name: t for t in actual}
    if set(found) != {t.name for t in declared}:
        raise PackageInvalid(
            d.name,
            f"declared {kind}s {sorted(t.name for t in declared)} but the ONNX graph has {sorted(found)}",
        )
    for tensor in declared:
        graph_tensor = found[tensor.name]
        if graph_tensor.type != _ORT_TYPES[tensor.dtype]:
            raise PackageInvalid(
                d.name, f"{kind} {tensor.name}: declared {tensor.dtype}, graph {graph_tensor.type}"
            )
        dims = list(graph_tensor.shape)[1:]  # the first axis is the batch
        fixed = [n if isinstance(n, int) else -1 for n in dims]
        if len(fixed) != len(tensor.shape) or any(
            -1 not in (want, got) and want != got for want, got in zip(tensor.shape, fixed, strict=True)
        ):
            raise PackageInvalid(
                d.name, f"{kind} {tensor.name}: declared shape {list(tensor.shape)}, graph {fixed}"
            )
        if kind == "input" and any(
            want == -1 and got != -1 for want, got in zip(tensor.shape, fixed, strict=True)
        ):
            # the engine and onnxruntime would refuse every other size than the graph's
            raise PackageInvalid(
                d.name,
                f"input {tensor.name}: declared shape {list(tensor.shape)} has a free dim the graph "
                f"fixes ({fixed}); declare the graph's size",
            )


class OnnxInfer:
    """Batches through each package's graph in onnxruntime (CPU), one session per graph, kept.

    ``graphs`` replaces a package's own graph by name (the FP16 candidate of the parity gate on CPU).
    Called as ``chain.Infer``: ``(package, batch of its inputs) -> its outputs``, batch axis first.
    """

    def __init__(self, graphs: Mapping[str, Path] | None = None) -> None:
        self.graphs = dict(graphs or {})
        self._sessions: dict[Path, Any] = {}

    def __call__(self, package: ModelPackage, batch: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
        path = self.graphs.get(package.name, package.model_path)
        if path not in self._sessions:
            self._sessions[path] = session(path)
        names = [t.name for t in package.declaration.outputs]
        results = self._sessions[path].run(names, dict(batch))
        return dict(zip(names, results, strict=True))


def run_graph(path: Path, declaration: Declaration, examples: Sequence[Mapping[str, Any]]) -> list[Arrays]:
    """Each example (one job's tensors, no batch axis) through the graph as a batch; outputs per example."""
    graph = session(path)
    feed = {
        t.name: np.stack([np.asarray(e[t.name], dtype=t.numpy_dtype) for e in examples])
        for t in declaration.inputs
    }
    names = [t.name for t in declaration.outputs]
    results = graph.run(names, feed)
    return [
        {name: result[i] for name, result in zip(names, results, strict=True)} for i in range(len(examples))
    ]


def reference_examples(package: ModelPackage) -> list[Mapping[str, Any]]:
    """The package's reference inputs through its own preprocess (params empty)."""
    return [package.preprocess(path.read_bytes(), {}) for path in package.reference_inputs()]


#: onnxconverter-common's default ``max_finite_val``: it clamps any larger constant to this in FP16.
FP16_CONVERTER_MAX: Final = 1e4


def fp16_graph(source: Path, target: Path, *, keep_out_of_range: bool = False) -> Path:
    """An FP16 copy of the graph, FP32 inputs/outputs kept: the CPU stand-in for a TensorRT FP16 engine.

    Unnamed nodes get a name first: the converter names the casts it inserts after the nodes they feed,
    and two unnamed consumers of one input would give two casts of one name (an invalid graph).
    ``keep_out_of_range``: the nodes that read a constant the converter would clamp (beyond
    ``FP16_CONVERTER_MAX``) stay FP32, with their constants. PP-OCRv4 detection has one: a BatchNorm with
    a running variance of 9.8e7, clamped to 1e4, collapses the whole FP16 graph; a TensorRT build folds
    that BatchNorm into its convolution in FP32 instead.
    """
    import onnx  # noqa: PLC0415 - the models extra
    from onnxconverter_common import float16  # noqa: PLC0415

    model = onnx.load(str(source))
    taken = {node.name for node in model.graph.node}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = next(n for n in (f"node{index}_{k}" for k in range(len(taken) + 1)) if n not in taken)
            taken.add(node.name)
    keep = _nodes_reading_out_of_range_constants(model) if keep_out_of_range else []
    model = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=keep or None)
    onnx.save(model, str(target))
    return target


def _nodes_reading_out_of_range_constants(model: Any) -> list[str]:
    """Names of the nodes that read a float constant beyond ``FP16_CONVERTER_MAX`` (naming them if
    unnamed); such Constant nodes become initializers, which the converter leaves FP32 for kept nodes."""
    from onnx import numpy_helper  # noqa: PLC0415 - the models extra

    graph = model.graph
    large = {init.name for init in graph.initializer if _beyond_fp16(numpy_helper.to_array(init))}
    for node in list(graph.node):
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            array = numpy_helper.to_array(node.attribute[0].t)
            if _beyond_fp16(array):
                graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
                graph.node.remove(node)
                large.add(node.output[0])
    keep = []
    for index, node in enumerate(graph.node):
        if large.intersection(node.input):
            node.name = node.name or f"fp32_kept_{index}"
            keep.append(node.name)
    return keep


def _beyond_fp16(array: np.ndarray[Any, Any]) -> bool:
    return array.dtype == np.float32 and array.size > 0 and float(np.abs(array).max()) > FP16_CONVERTER_MAX
