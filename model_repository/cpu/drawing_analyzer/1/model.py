"""Triton python-backend model: runs ``model.onnx`` (next to this file) with onnxruntime on CPU.

Triton's dynamic batcher hands ``execute`` several requests at once; they are concatenated into one
onnxruntime call (up to ``max_batch_size`` rows) and the outputs are split back per request. onnxruntime
gets a small thread pool (config parameter ``intra_op_threads``, default 1) because on the development
machine it shares 2 cores with the worker's preprocessing processes.

This file runs inside tritonserver's python stub (``.venv-triton``), not in the worker's venv.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """The drawing_analyzer model (see docs/model-card.md)."""

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
        self.input_name = config["input"][0]["name"]
        self.output_names = [output["name"] for output in config["output"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
            batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            results = self.session.run(
                self.output_names, {self.input_name: batch.astype(np.float32, copy=False)}
            )
        except Exception as exc:  # answer every request with the error instead of killing the stub
            error = pb_utils.TritonError(f"drawing_analyzer inference failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses = []
        offset = 0
        for array in arrays:
            rows = slice(offset, offset + array.shape[0])
            offset += array.shape[0]
            tensors = [
                pb_utils.Tensor(name, result[rows])
                for name, result in zip(self.output_names, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        self.session = None
