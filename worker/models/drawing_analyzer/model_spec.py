"""The drawing analyzer's contract: Triton name, tensor names/shapes/dtypes, class names, analyses.

The one source of what the package's handler, the training script, the parity check and the tests must
agree on; ``tests/model/test_model_spec.py`` checks ``model.toml``, the Triton configs generated from it
and the ONNX graph against these constants. No heavy imports (no numpy, no tritonclient).

Tensor layout: the input is a batch of preprocessed grayscale images, ``[batch, 1, H, W]`` FP32, ink = 1.0
and paper = 0.0 (``preprocessing``). Outputs are ``[batch, NUM_CLASSES]`` softmax probabilities in
``OUTPUT_CLASSES`` order and ``[batch, EMBEDDING_DIM]`` L2-normalised embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final


@dataclass(frozen=True)
class TensorSpec:
    """One model tensor as Triton sees it: shape excludes the batch axis (``max_batch_size > 0``)."""

    name: str
    triton_dtype: str  # Triton's name ("FP32"); config.pbtxt spells it "TYPE_FP32"
    shape: tuple[int, ...]


MODEL_NAME: Final = "drawing_analyzer"
#: The model's version (``model.toml``'s ``model.version``; the generated repositories' version folder).
MODEL_VERSION: Final = "1"
#: This package's folder (model.toml, handler.py, the ONNX graph), wherever it was loaded from.
PACKAGE_DIR: Final = Path(__file__).resolve().parent
#: The committed ONNX graph, the one copy (the CPU repository serves it; GPU engines are built from it).
ONNX_PATH: Final = PACKAGE_DIR / "model.onnx"

#: Part classes: what a drawing can be (the first columns of the class-probability output).
CLASS_NAMES: Final[tuple[str, ...]] = ("plate", "shaft", "flange", "bracket", "gear", "pipe_fitting")
#: The model's explicit rejection class, the last column of the class-probability output, and the answer
#: for an input it cannot place (``abstention``); neither is a part class.
NOT_A_DRAWING: Final = "not_a_drawing"
UNSURE: Final = "unsure"
#: Columns of ``CLASS_PROBS``, in order: the part classes, then ``not_a_drawing``.
OUTPUT_CLASSES: Final[tuple[str, ...]] = (*CLASS_NAMES, NOT_A_DRAWING)
#: Width of ``CLASS_PROBS`` (part classes + ``not_a_drawing``).
NUM_CLASSES: Final = len(OUTPUT_CLASSES)
EMBEDDING_DIM: Final = 128

#: Side of the square model input in pixels; drawings are letterboxed into it (``preprocessing``).
INPUT_SIZE_PX: Final = 192
INPUT_CHANNELS: Final = 1

INPUT: Final = TensorSpec("IMAGE", "FP32", (INPUT_CHANNELS, INPUT_SIZE_PX, INPUT_SIZE_PX))
OUTPUT_PROBS: Final = TensorSpec("CLASS_PROBS", "FP32", (NUM_CLASSES,))
OUTPUT_EMBEDDING: Final = TensorSpec("EMBEDDING", "FP32", (EMBEDDING_DIM,))
OUTPUTS: Final[tuple[TensorSpec, ...]] = (OUTPUT_PROBS, OUTPUT_EMBEDDING)

#: Largest batch Triton accepts (config.pbtxt ``max_batch_size``; TensorRT profile max).
MAX_BATCH_SIZE: Final = 32
#: Images per batch request the worker forms (``model.toml``'s ``preferred_batch_size``); TensorRT engines
#: are optimised for it (scripts/build_trt_engine ``--optShapes``).
WORKER_BATCH_SIZE: Final = 16
#: Model instances in both repositories (``instance_group`` count): one serves the worker's batch
#: requests, the other stays free for interactive ones (no dynamic batcher: the worker forms batches).
INSTANCES: Final = 2

#: Analyses a job may request.
ANALYSES: Final[tuple[str, ...]] = ("classify", "embed")
