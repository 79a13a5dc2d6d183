"""Triton python-backend model that runs a package's ONNX graph with onnxruntime on CPU.

Copied by ``triton_repository.write_repository(variant="cpu")`` into ``<repo>/<model>/<version>/model.py``
next to ``model.onnx``; it runs inside tritonserver's python stub (the local stack's ``.venv-triton``), never
in the worker. Batches arrive as the worker forms them; several requests handed over at once are
concatenated into one onnxruntime call per input shape (free sizes: requests of different sizes cannot
share one) and split back. ``intra_op_threads`` (config parameter, default 1)
keeps onnxruntime from fighting the worker's preprocessing processes for the cores.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One model package's ONNX graph, served with the tensor names its declaration gives."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        threads = int(params.get("intra_op_threads", {}).get("string_value", "1"))
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.name = config["name"]
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        try:
            per_request = [
                {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.input_names}
                for r in requests
            ]
        except Exception as exc:  # answer every request with the error instead of killing the stub
            return [self._error(exc) for _ in requests]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, inputs in enumerate(per_request):
            key = tuple(inputs[n].shape[1:] for n in self.input_names)
            groups.setdefault(key, []).append(index)
        for indices in groups.values():
            try:
                answered = self._run([per_request[i] for i in indices])
            except Exception as exc:
                answered = [self._error(exc) for _ in indices]
            for index, response in zip(indices, answered, strict=True):
                responses[index] = response
        return responses

    def _run(self, per_request: list[dict[str, Any]]) -> list[Any]:
        """Requests of one input shape: one onnxruntime call, split back per request."""
        feed = {
            name: per_request[0][name]
            if len(per_request) == 1
            else np.concatenate([inputs[name] for inputs in per_request])
            for name in self.input_names
        }
        results = self.session.run(self.output_names, feed)
        responses = []
        offset = 0
        for inputs in per_request:
            rows = len(next(iter(inputs.values())))
            window = slice(offset, offset + rows)
            offset += rows
            tensors = [
                pb_utils.Tensor(name, result[window])
                for name, result in zip(self.output_names, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def _error(self, exc: Exception) -> Any:
        error = pb_utils.TritonError(f"{self.name} inference failed: {exc}")
        return pb_utils.InferenceResponse(output_tensors=[], error=error)

    def finalize(self) -> None:
        self.session = None
