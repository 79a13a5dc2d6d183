"""The pipeline's ports: what it needs of storage, the model, notifications and preprocessing.

``typing.Protocol`` classes: the real adapters (worker/runtime/storage.py, inference.py, notify.py,
intake.py) are wired in by ``worker.runtime.app``; unit tests pass small fakes
(tests/runtime/worker_fakes.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from worker.shared.contracts import Notification

if TYPE_CHECKING:  # not at run time: the preprocess pool starts before the Pub/Sub client is imported
    from worker.runtime.intake import JobSource

FloatArray = npt.NDArray[np.float32]


class InputStore(Protocol):
    """Where job inputs are read from (GCS)."""

    async def read_input(self, bucket: str, name: str, *, max_bytes: int, urgent: bool = False) -> bytes:
        """``urgent``: interactive work, served ahead of batch calls (its own threads)."""
        ...


class ResultStore(Protocol):
    """Where the one result object of each job is written, never overwritten (GCS)."""

    def result_uri(self, name: str) -> str: ...

    async def create_result(self, name: str, data: bytes, *, urgent: bool = False) -> bool:
        """True when created, False when the object existed already."""
        ...

    async def read_result(self, name: str) -> bytes | None: ...


class Model(Protocol):
    """The served model (Triton)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    async def ready(self) -> bool: ...

    async def infer(self, batch: FloatArray, *, interactive: bool) -> tuple[FloatArray, FloatArray]: ...


class Notifier(Protocol):
    """Publishes result notifications; returns once Pub/Sub accepted the message."""

    async def publish(self, notification: Notification) -> str: ...


class Preprocessor(Protocol):
    """Input bytes -> the model's input tensor."""

    async def __call__(self, data: bytes, *, urgent: bool = False) -> FloatArray:
        """``urgent``: interactive work, never queued behind batch work."""
        ...


#: (class probabilities, embedding, requested analyses) -> the result's ``outputs``.
Postprocess = Callable[[FloatArray, FloatArray, tuple[str, ...]], dict[str, Any]]


@dataclass(frozen=True)
class Ports:
    """Every adapter the pipeline talks to."""

    source: JobSource
    inputs: InputStore
    results: ResultStore
    model: Model
    notifier: Notifier
    preprocess: Preprocessor
    postprocess: Postprocess
