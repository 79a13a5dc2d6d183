"""In-memory fakes of the pipeline's ports, for unit tests of pure orchestration logic only."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import time
from collections import defaultdict
from typing import Any

import numpy as np

from worker.models.drawing_analyzer import abstention, model_spec
from worker.runtime.documents import DocumentInfo, PageMeasure
from worker.runtime.model_packages.catalog import Catalog
from worker.runtime.model_packages.handlers import Preprocessed
from worker.runtime.model_packages.items import PageItems
from worker.runtime.model_packages.loader import load_package
from worker.runtime.pipeline.ports import InputObject
from worker.shared import contracts, errors
from worker.shared.contracts import Delivery, Notification

_ids = itertools.count(1)


def delivery(
    body: Any,
    *,
    subscription: str = "fleet-jobs-batch",
    attempt: int = 1,
    attributes: dict[str, str] | None = None,
) -> Delivery:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    n = next(_ids)
    now = time.time()
    return Delivery(
        ack_id=f"ack-{n}",
        subscription=subscription,
        message_id=f"m{n}",
        data=data,
        attributes=attributes or {},
        publish_time=now,
        delivery_attempt=attempt,
        leased_at=now,
    )


class FakeSource:
    def __init__(self) -> None:
        self.queues: dict[str, list[Delivery]] = defaultdict(list)
        self.acked: list[str] = []
        self.nacked: list[str] = []
        self.extended: list[tuple[str, int]] = []
        self.pull_sizes: list[tuple[str, int]] = []

    def put(self, d: Delivery) -> None:
        self.queues[d.subscription].append(d)

    async def pull(self, subscription: str, max_messages: int, *, wait: bool = False) -> list[Delivery]:
        self.pull_sizes.append((subscription, max_messages))
        queue = self.queues[subscription]
        out, self.queues[subscription] = queue[:max_messages], queue[max_messages:]
        return out

    async def acknowledge(self, subscription: str, ack_ids: list[str]) -> None:
        self.acked.extend(ack_ids)

    async def modify_ack_deadline(self, subscription: str, ack_ids: list[str], seconds: int) -> None:
        if seconds == 0:
            self.nacked.extend(ack_ids)
        else:
            self.extended.extend((a, seconds) for a in ack_ids)


class FakeStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {"in/ok.png": b"png"}
        self.results: dict[str, bytes] = {}
        self.writes = 0
        self.fail_reads = False

    def result_uri(self, name: str) -> str:
        return f"gs://results/{name}"

    async def read_input(
        self, bucket: str, name: str, *, max_bytes: int, urgent: bool = False
    ) -> InputObject:
        if self.fail_reads:
            raise errors.StorageUnavailable("fake 503")
        if name not in self.objects:
            raise errors.InputNotFound("missing")
        data = self.objects[name]
        return InputObject(data, contracts.input_digest(data))

    async def create_result(self, name: str, data: bytes, *, urgent: bool = False) -> bool:
        self.writes += 1
        if name in self.results:
            return False
        self.results[name] = data
        return True

    async def read_result(self, name: str) -> bytes | None:
        return self.results.get(name)


class FakeModel:
    name = "drawing_analyzer"
    version = "1"

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.interactive_flags: list[bool] = []
        self.fail: errors.FleetError | None = None
        self.delay_s = 0.0

    async def ready(self) -> bool:
        return self.fail is None

    async def infer(self, inputs: dict[str, Any], *, interactive: bool) -> dict[str, Any]:
        batch = inputs["IMAGE"]
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        if float(batch.max()) > 1.5:  # a "poisoned" tensor the model rejects
            raise errors.ModelRejected("bad tensor")
        self.batches.append(len(batch))
        self.interactive_flags.append(interactive)
        n = len(batch)
        # A confident flange near the flange prototype, so the real postprocess answers "flange".
        probs = np.full((n, model_spec.NUM_CLASSES), 0.01, dtype=np.float32)
        probs[:, model_spec.CLASS_NAMES.index("flange")] = 1.0 - 0.01 * (model_spec.NUM_CLASSES - 1)
        prototypes = abstention.load_policy().prototypes
        flange = np.asarray(prototypes[2], dtype=np.float32) if prototypes else np.ones(128) / np.sqrt(128)
        emb = np.tile(flange.astype(np.float32), (n, 1))
        return {"CLASS_PROBS": probs, "EMBEDDING": emb}


class FakeNotifier:
    def __init__(self) -> None:
        self.sent: list[Notification] = []

    async def publish(self, notification: Notification) -> str:
        self.sent.append(notification)
        return str(len(self.sent))

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(n.data) for n in self.sent]


class FakePreprocessor:
    """The drawing package's input without decoding: 4 x 4 pixels, a value the FakeModel reads.

    A "document" is TIFF's magic bytes (``PAGED``) followed by one character per page: ``PAGED + b"x.x"``
    has three pages, the second blank (content 0.0 on white paper); any other input is one page with
    content 0.05. ``calls`` records each decode's (page, urgent), ``measured`` the pages measured and
    ``probes`` each probe's urgent flag.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[int, bool]] = []
        self.measured: list[int] = []
        self.probes: list[bool] = []

    async def __call__(
        self,
        package_folder: str,
        data: bytes,
        params: dict[str, Any],
        *,
        urgent: bool = False,
        measure: bool = True,
    ) -> Preprocessed:
        page = int(params.get("page", 1))
        self.calls.append((page, urgent))
        if data == b"garbage":
            raise errors.ImageUndecodable("not an image")
        value = 2.0 if data == b"poison" else 0.5
        blank = data.startswith(PAGED) and data[len(PAGED) + page - 1 : len(PAGED) + page] == b"."
        tensors = PageItems(({"IMAGE": np.full((1, 4, 4), value, dtype=np.float32)},))
        if not measure:
            return Preprocessed(tensors, None)
        self.measured.append(page)
        return Preprocessed(tensors, PageMeasure(paper=250, content=0.0 if blank else 0.05))

    async def probe(self, data: bytes, *, urgent: bool = False) -> DocumentInfo:
        self.probes.append(urgent)
        count = len(data) - len(PAGED)
        return DocumentInfo("tiff", count, ((800.0, 600.0),) * count)


PAGED = b"II*\x00"  # TIFF magic: documents.may_have_pages says yes
fake_preprocess = FakePreprocessor()


@functools.cache
def drawing_catalog() -> Catalog:
    """The bundled drawing package alone (its real handler's postprocess answers the FakeModel's rows)."""
    return Catalog([load_package(model_spec.PACKAGE_DIR)])
