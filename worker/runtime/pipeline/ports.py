"""The pipeline's ports: what it needs of storage, the model, notifications and preprocessing.

``typing.Protocol`` classes: the real adapters (worker/runtime/storage.py, inference.py, notify.py,
intake/) are wired in by ``worker.runtime.app``; unit tests pass small fakes
(tests/runtime/worker_fakes.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from worker.shared.contracts import Notification

if TYPE_CHECKING:  # not at run time: the preprocess pool starts before the Pub/Sub client is imported
    from worker.runtime.documents import DocumentInfo
    from worker.runtime.intake import JobSource
    from worker.runtime.model_packages.catalog import Catalog
    from worker.runtime.model_packages.handlers import Preprocessed

FloatArray = npt.NDArray[np.float32]
#: Tensors by name: one job's (no batch axis) or a batch's (batch axis first).
Arrays = dict[str, np.ndarray[Any, Any]]


class InputObject(NamedTuple):
    """A job's input as read: its bytes and their sha256 (the result fingerprint's ``input_sha256``).

    The digest is taken where the bytes are read, in the store's I/O thread, so the event loop never
    hashes megabytes (~0.3 ms per A4 drawing).
    """

    data: bytes
    sha256: str


class InputStore(Protocol):
    """Where job inputs are read from (GCS)."""

    async def read_input(
        self, bucket: str, name: str, *, max_bytes: int, urgent: bool = False
    ) -> InputObject:
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
    """One served model (Triton), named after its package."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    async def ready(self) -> bool: ...

    async def infer(self, inputs: Arrays, *, interactive: bool) -> Arrays:
        """A batch of the package's inputs -> its outputs, one row per item."""
        ...


class Notifier(Protocol):
    """Publishes result notifications; returns once Pub/Sub accepted the message."""

    async def publish(self, notification: Notification) -> str: ...


class Preprocessor(Protocol):
    """A document's page -> one model package's input tensors and the page's blank measure; a document's
    pages."""

    async def __call__(
        self,
        package_folder: str,
        data: bytes,
        params: dict[str, Any],
        *,
        urgent: bool = False,
        measure: bool = True,
    ) -> Preprocessed:
        """Page ``params["page"]`` of ``data``; ``urgent``: interactive work, never queued behind batch;
        ``measure``: take the page's blank measure too (one package's decode per page does)."""
        ...

    async def probe(self, data: bytes, *, urgent: bool = False) -> DocumentInfo:
        """The page count and sizes of a document that may have several pages (TIFF, PDF)."""
        ...


@dataclass(frozen=True)
class Ports:
    """Every adapter the pipeline talks to: one ``Model`` per package of ``catalog``, by name."""

    source: JobSource
    inputs: InputStore
    results: ResultStore
    catalog: Catalog
    models: Mapping[str, Model]
    notifier: Notifier
    preprocess: Preprocessor
