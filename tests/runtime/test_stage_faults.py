"""The audit: an exception injected at every stage boundary of the pipeline, and each job gets its terminal
answer or goes back for a redelivery within a bound of seconds — never left to its lease, never at drain.

Stages, as a job crosses them: fetch (the input read), probe (a TIFF's pages), decode (a page's decode
before the package's handler), preprocess (the handler), batch assembly (stacking tensors), infer
(Triton), unpack (a row per tensor), postprocess (the handler), result write, notify. At each, a
transient error (the adapters' own classification), a permanent one where the input can be at fault,
and a bug (an exception nobody classified). The real Pipeline runs a free-size page package through the
real handlers and decoder (in-process preprocessor); storage, Pub/Sub and Triton are fakes that raise
on cue. A stage that never returns is answered PROCESSING_TIMEOUT at the job's budget and reported by
the lease-age watchdog with its stage.

Fan-out boundaries, on a package that gives one item per bar of a page (tests/runtime/model_packages/
paged.py ``bars``; each page of the document has three): an item's preprocess (an item off its
declaration, out of its bounds, too many items, a context that does not pickle), an item's batch (Triton
down, one item refused, a bug), the gather of a page's rows (a row short, a bug), and postprocess with
its context (the handler failing on it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from worker.dev import drawing_documents
from worker.runtime.model_packages import handlers
from worker.runtime.model_packages import items as model_items
from worker.runtime.model_packages.handlers import Preprocessed
from worker.runtime.model_packages.loader import load_packages
from worker.runtime.pipeline import batching
from worker.runtime.pipeline.core import Pipeline
from worker.runtime.pipeline.ports import Ports
from worker.runtime.pipeline.preprocessors import InlinePreprocessor
from worker.runtime.pipeline.watchdog import STAGES, Watchdog
from worker.runtime.telemetry import Metrics
from worker.shared import contracts, errors
from worker.shared.contracts import Delivery, Notification

from .model_packages import free_size, paged
from .test_pipeline import SETTINGS
from .worker_fakes import FakeNotifier, FakeSource, FakeStore, delivery

#: Every job is answered or given back within this many seconds of its lease (retries and their
#: backoff included: two attempts, 0.2 s apart), or it was left to hang.
BOUND_S = 5.0
#: A bug: an exception no adapter classified.
BUG = RuntimeError("injected bug")

#: The package's handler misbehaves where the job's params say.
HANDLER = free_size.HANDLER.replace(
    "def preprocess_page(page, params):\n",
    "def preprocess_page(page, params):\n"
    "    if params.get('fault') == 'preprocess':\n"
    "        raise ValueError('injected in preprocess')\n",
).replace(
    "def postprocess(outputs, params):\n",
    "def postprocess(outputs, params):\n"
    "    if params.get('fault') == 'postprocess':\n"
    "        raise ValueError('injected in postprocess')\n",
)


@dataclasses.dataclass
class Fault:
    """Where to raise, and what."""

    stage: str
    error: BaseException


class Faults:
    """The one fault of a case; ``hit`` raises it when the job crosses its stage."""

    def __init__(self, fault: Fault | None) -> None:
        self.fault = fault

    def hit(self, stage: str) -> None:
        if self.fault is not None and self.fault.stage == stage:
            raise self.fault.error


class TimedSource(FakeSource):
    """Records when each message is settled (acked or nacked)."""

    def __init__(self) -> None:
        super().__init__()
        self.settled: dict[str, float] = {}

    async def acknowledge(self, subscription: str, ack_ids: list[str]) -> None:
        self.settled.update(dict.fromkeys(ack_ids, time.monotonic()))
        await super().acknowledge(subscription, ack_ids)

    async def modify_ack_deadline(self, subscription: str, ack_ids: list[str], seconds: int) -> None:
        if seconds == 0:
            self.settled.update(dict.fromkeys(ack_ids, time.monotonic()))
        await super().modify_ack_deadline(subscription, ack_ids, seconds)


class FaultyStore(FakeStore):
    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults

    async def read_input(self, bucket: str, name: str, *, max_bytes: int, urgent: bool = False) -> Any:
        self.faults.hit("fetch")
        return await super().read_input(bucket, name, max_bytes=max_bytes, urgent=urgent)

    async def create_result(self, name: str, data: bytes, *, urgent: bool = False) -> bool:
        self.faults.hit("result_write")
        return await super().create_result(name, data, urgent=urgent)


class FaultyNotifier(FakeNotifier):
    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults

    async def publish(self, notification: Notification) -> str:
        self.faults.hit("notify")
        return await super().publish(notification)


class FaultyPreprocessor(InlinePreprocessor):
    """The in-process preprocessor; ``decode`` raises before the page reaches the handler."""

    def __init__(self, faults: Faults) -> None:
        def run(folder: str, data: bytes, params: dict[str, Any], *, measure: bool = True) -> Preprocessed:
            faults.hit("decode")
            return handlers.run_preprocess(folder, data, params, measure=measure)

        super().__init__(metrics=Metrics(), func=run)
        self.faults = faults

    async def probe(self, data: bytes, *, urgent: bool = False) -> Any:
        self.faults.hit("probe")
        return await super().probe(data, urgent=urgent)


class FaultyModel:
    """The package's graph in numpy (each page's mean), raising at ``infer`` or answering one row short
    at ``unpack``; ``hang`` never answers."""

    version = "1"

    def __init__(self, name: str, faults: Faults) -> None:
        self.name = name
        self.faults = faults
        self.hang = False

    async def ready(self) -> bool:
        return True

    async def infer(self, inputs: dict[str, Any], *, interactive: bool) -> dict[str, Any]:
        if self.hang:
            await asyncio.Event().wait()
        self.faults.hit("infer")
        pages = inputs["PAGE"]
        darkness = pages.mean(axis=(2, 3)).astype(np.float32)
        fault = self.faults.fault
        if (
            fault is not None
            and fault.stage == "unpack"
            and isinstance(fault.error, errors.ModelOutputInvalid)
        ):
            darkness = darkness[:-1]  # one row short: a row would go to the wrong job
        return {"DARKNESS": darkness}


class World:
    """The real Pipeline over the faulty ports, serving the page package (``serve``) on a 2-page TIFF."""

    def __init__(
        self, root: Path, fault: Fault | None, monkeypatch: pytest.MonkeyPatch, **settings: Any
    ) -> None:
        self.faults = Faults(fault)
        self.source, self.store, self.notifier = (
            TimedSource(),
            FaultyStore(self.faults),
            FaultyNotifier(self.faults),
        )
        name, self.model, self.store.objects["in/doc.tif"] = self.serve(root)
        self.metrics = Metrics(slots=SETTINGS.pipeline_slots)
        ports = Ports(
            self.source,
            self.store,
            self.store,
            load_packages(root),
            {name: self.model},
            self.notifier,
            FaultyPreprocessor(self.faults),
        )
        self.pipeline = Pipeline(dataclasses.replace(SETTINGS, **settings), ports, metrics=self.metrics)
        self.patch(monkeypatch)

    def serve(self, root: Path) -> tuple[str, Any, bytes]:
        """Write the package into ``root``: its name, its model, the document the job reads."""
        free_size.write_package(root, "pages", "darkness")
        (root / "pages" / "handler.py").write_text(textwrap.dedent(HANDLER), encoding="utf-8")
        page = free_size.page((300, 200))
        document = drawing_documents.multipage_tiff([page, Image.new("L", (300, 200), 128)])
        return "pages", FaultyModel("pages", self.faults), document

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Faults where the Batcher assembles a request and unpacks its rows."""
        stack, unstack = batching._stack, batching._unstack

        def faulty_stack(items: Any) -> Any:
            self.faults.hit("batch_assembly")
            return stack(items)

        def faulty_unstack(outputs: Any, count: int, *, model: str) -> Any:
            fault = self.faults.fault
            if fault is not None and fault.stage == "unpack" and fault.error is BUG:
                raise BUG
            return unstack(outputs, count, model=model)

        monkeypatch.setattr(batching, "_stack", faulty_stack)
        monkeypatch.setattr(batching, "_unstack", faulty_unstack)

    def run_one(self, params: dict[str, Any] | None = None) -> tuple[Delivery, float]:
        """One v2 job of the 2-page TIFF; (its delivery, seconds from its lease to its settlement)."""
        body = {"schema_version": 2, "job_id": "audit", "input_uri": "gs://inputs/in/doc.tif"}
        job = delivery({**body, "params": params or {}})
        self.source.put(job)

        async def scenario() -> float:
            task = asyncio.create_task(self.pipeline.run())
            try:
                async with asyncio.timeout(BOUND_S * 4):
                    while job.ack_id not in self.source.settled:
                        await asyncio.sleep(0.005)
            finally:
                settled = self.source.settled.get(job.ack_id)
                self.pipeline.drain("test")  # only after the decision: it must not wait for the drain
                await task
            assert settled is not None
            return settled - leased

        leased = time.monotonic()
        return job, asyncio.run(scenario())


REDELIVERED = "redelivered"
#: (stage, injected error, expected: REDELIVERED or the code the job is answered with)
CASES = [
    ("fetch", errors.StorageUnavailable("injected 503"), REDELIVERED),
    ("fetch", BUG, REDELIVERED),
    ("probe", errors.TransientError("injected: pool broken"), REDELIVERED),
    ("probe", BUG, REDELIVERED),
    ("decode", errors.ImageUndecodable("injected: truncated page"), "IMAGE_UNDECODABLE"),
    ("decode", BUG, REDELIVERED),
    ("preprocess", ValueError("in the handler"), "MODEL_PREPROCESS_FAILED"),
    ("batch_assembly", BUG, REDELIVERED),
    ("infer", errors.InferenceUnavailable("injected: Triton down"), REDELIVERED),
    ("infer", errors.ModelRejected("injected: INVALID_ARGUMENT"), "MODEL_REJECTED"),
    ("infer", BUG, REDELIVERED),
    ("unpack", errors.ModelOutputInvalid("one row short"), "MODEL_OUTPUT_INVALID"),
    ("unpack", BUG, REDELIVERED),
    ("postprocess", ValueError("in the handler"), "MODEL_OUTPUT_INVALID"),
    ("result_write", errors.StorageUnavailable("injected 503"), REDELIVERED),
    ("result_write", BUG, REDELIVERED),
    ("notify", errors.PubSubUnavailable("injected UNAVAILABLE"), REDELIVERED),
    ("notify", BUG, REDELIVERED),
]


@pytest.mark.parametrize(
    ("stage", "error", "expected"), CASES, ids=[f"{s}-{type(e).__name__}" for s, e, _ in CASES]
)
def test_a_fault_at_any_stage_answers_the_job_or_gives_it_back_within_the_bound(
    stage: str, error: BaseException, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a job of a two-page document, and a fault injected where it crosses one stage
    world = World(tmp_path / "models", Fault(stage, error), monkeypatch)
    params = {"fault": stage} if stage in ("preprocess", "postprocess") else {}
    # When the job runs
    job, took_s = world.run_one(params)
    # Then its decision came within the bound, before the drain: given back for another delivery with
    # no answer published, or answered with its one failed result and notification on the first delivery
    assert took_s < BOUND_S, (stage, took_s)
    assert_answered_or_given_back(world, job, expected, stage)


#: The bars package's handler misbehaves at an item's preprocess, or in postprocess, where params say.
BARS_HANDLER = paged.BARS_HANDLER.replace(
    "    return Prepared(items, context=context)\n",
    "    fault = params.get('fault')\n"
    "    if fault == 'item_dtype':\n"
    "        items[1] = {'crop': items[1]['crop'].astype(np.float64)}\n"
    "    elif fault == 'item_bounds':\n"
    "        items[1] = {'crop': np.ones((1, 8, 200), dtype=np.float32)}\n"
    "    elif fault == 'too_many_items':\n"
    "        items = items * 3\n"
    "    elif fault == 'context':\n"
    "        import threading\n"
    "        context['lock'] = threading.Lock()\n"
    "    elif fault == 'item_rejected' and params['page'] == 2:\n"
    "        items[1] = {'crop': -items[1]['crop']}\n"
    "    return Prepared(items, context=context)\n",
).replace(
    '    context = params["context"]\n',
    '    context = params["context"]\n'
    "    if params.get('fault') == 'postprocess_context':\n"
    "        context = context['missing']\n",
)
assert BARS_HANDLER.count("fault") == 8, "the faults were not planted in the handler"


class FaultyColumns:
    """The bars graph in numpy (each crop's column sums); raises at ``item_batch``, refuses a request
    holding a negative crop (INVALID_ARGUMENT), answers a row short at ``gather``."""

    name = "bars"
    version = "1"

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.requests = 0

    async def ready(self) -> bool:
        return True

    async def infer(self, inputs: dict[str, Any], *, interactive: bool) -> dict[str, Any]:
        self.requests += 1
        self.faults.hit("item_batch")
        crops = inputs["crop"]
        if float(crops.min()) < 0:
            raise errors.ModelRejected("INVALID_ARGUMENT: a negative crop")
        columns = crops.sum(axis=(1, 2)).astype(np.float32)
        fault = self.faults.fault
        if (
            fault is not None
            and fault.stage == "gather"
            and isinstance(fault.error, errors.ModelOutputInvalid)
        ):
            columns = columns[:-1]
        return {"columns": columns}


class FanOutWorld(World):
    """The real Pipeline serving ``bars`` over the faulty ports: a 2-page TIFF of 3 bars a page."""

    def serve(self, root: Path) -> tuple[str, Any, bytes]:
        paged.write_bars(root)
        (root / "bars" / "handler.py").write_text(BARS_HANDLER, encoding="utf-8")
        page = paged.bars_page([10, 30, 20])
        return "bars", FaultyColumns(self.faults), paged.tiff([page, page])

    def patch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A fault where a page's rows are gathered for its postprocess."""
        postprocess_outputs = model_items.postprocess_outputs

        def faulty_gather(declaration: Any, rows: Any) -> Any:
            fault = self.faults.fault
            if fault is not None and fault.stage == "gather" and fault.error is BUG:
                raise BUG
            return postprocess_outputs(declaration, rows)

        monkeypatch.setattr(model_items, "postprocess_outputs", faulty_gather)


#: (stage, injected error or the handler's fault, expected: REDELIVERED or the job's code)
FAN_OUT_CASES: list[tuple[str, BaseException | str, str]] = [
    ("item_preprocess", "item_dtype", "MODEL_PREPROCESS_FAILED"),
    ("item_preprocess", "item_bounds", "TENSOR_OUT_OF_BOUNDS"),
    ("item_preprocess", "too_many_items", "TOO_MANY_ITEMS"),
    ("item_preprocess", "context", "MODEL_PREPROCESS_FAILED"),
    ("item_batch", errors.InferenceUnavailable("injected: Triton down"), REDELIVERED),
    ("item_batch", "item_rejected", "MODEL_REJECTED"),
    ("item_batch", BUG, REDELIVERED),
    ("gather", errors.ModelOutputInvalid("a row short"), "MODEL_OUTPUT_INVALID"),
    ("gather", BUG, REDELIVERED),
    ("postprocess", "postprocess_context", "MODEL_OUTPUT_INVALID"),
]


@pytest.mark.parametrize(
    ("stage", "error", "expected"),
    FAN_OUT_CASES,
    ids=[f"{s}-{e if isinstance(e, str) else type(e).__name__}" for s, e, _ in FAN_OUT_CASES],
)
def test_a_fault_at_a_fan_out_boundary_answers_the_job_or_gives_it_back_within_the_bound(
    stage: str,
    error: BaseException | str,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a job of a two-page document of 3 items a page, and a fault where its items cross a boundary
    injected = None if isinstance(error, str) else Fault(stage, error)
    world = FanOutWorld(tmp_path / "models", injected, monkeypatch)
    params = {"fault": error} if isinstance(error, str) else {}
    # When the job runs
    job, took_s = world.run_one(params)
    # Then it is answered or given back within the bound, with one result and one notification at most
    assert took_s < BOUND_S, (stage, took_s)
    assert_answered_or_given_back(world, job, expected, stage)
    if stage == "item_preprocess":  # refused where preprocess runs: no item reached the model
        assert world.model.requests == 0


def assert_answered_or_given_back(world: World, job: Delivery, expected: str, stage: str) -> None:
    """``REDELIVERED``: nacked with no answer published (one written before the notify failed stays);
    else one failed result with the code and one notification, acked on the first delivery."""
    if expected == REDELIVERED:
        assert world.source.nacked == [job.ack_id] and not world.source.acked
        assert world.notifier.sent == []
        assert ("results/audit.json" in world.store.results) == (stage == "notify")
        return
    assert world.source.acked == [job.ack_id] and not world.source.nacked
    document = json.loads(world.store.results["results/audit.json"])
    assert (document["status"], document["error"]["code"]) == ("failed", expected)
    (note,) = world.notifier.bodies()
    assert (note["status"], note["error"]["code"]) == (contracts.STATUS_FAILED, expected)


@pytest.mark.parametrize("kind", [World, FanOutWorld], ids=["pages", "fan-out"])
def test_without_a_fault_the_job_succeeds_with_every_page(
    kind: type[World], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = kind(tmp_path / "models", None, monkeypatch)
    job, took_s = world.run_one()
    assert took_s < BOUND_S and world.source.acked == [job.ack_id]
    document = json.loads(world.store.results["results/audit.json"])
    assert document["status"] == "succeeded" and [p["page"] for p in document["pages"]] == [1, 2]
    if kind is FanOutWorld:  # every item of every page answered, each row back to its item
        lines = [p["outputs"]["bars"]["lines"] for p in document["pages"]]
        assert lines == [paged.bars_expected([10, 30, 20])] * 2


def test_a_stage_that_never_returns_is_reported_by_the_watchdog_and_answered_at_the_jobs_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a model that never answers, a job budget (max_processing_s) of 3 s, and the watchdog with
    # stage budgets of 0.5 s checking every 50 ms
    world = World(tmp_path / "models", None, monkeypatch, max_processing_s=3.0)
    world.model.hang = True
    world.pipeline.watchdog = Watchdog(
        world.pipeline.clock, world.metrics, budgets=dict.fromkeys(STAGES, 0.5), interval_s=0.05
    )
    # When the job runs
    _job, took_s = world.run_one()
    # Then the watchdog counted it once as held in inference, long before the job's budget ran out
    assert world.metrics.overdue["infer"] == 1
    # and the job is answered PROCESSING_TIMEOUT at its budget, not left to its lease
    assert 3.0 <= took_s < 3.0 + BOUND_S
    document = json.loads(world.store.results["results/audit.json"])
    assert document["error"]["code"] == "PROCESSING_TIMEOUT"


def test_a_publish_that_fails_in_any_way_fails_its_notification_and_the_notifier_goes_on() -> None:
    # Below the notify port: the batching publisher, whose flush loop every notification waits on
    import grpc  # noqa: PLC0415 - the runtime's gRPC, present wherever the worker is

    from worker.runtime.notify import PubSubNotifier  # noqa: PLC0415

    calls: list[int] = []

    async def publish(request: Any, timeout: float) -> Any:
        calls.append(len(request.messages))
        if len(calls) == 1:
            raise ValueError("not an RpcError: a bug below the adapter")
        return SimpleNamespace(message_ids=["m-2"])

    async def scenario() -> tuple[BaseException | str, str]:
        channel = grpc.aio.insecure_channel("127.0.0.1:9")  # never called: the stub is replaced
        notifier = PubSubNotifier(channel, "projects/p/topics/t", interval_s=0.01, timeout_s=1.0)
        notifier._publish = publish  # the one RPC, faked
        notifier.start()
        note = contracts.build_notification(
            job_id="a",
            status="succeeded",
            result_uri="gs://r/a.json",
            error=None,
            priority="batch",
            client_attributes={},
        )
        try:
            async with asyncio.timeout(BOUND_S):
                first = await asyncio.gather(notifier.publish(note), return_exceptions=True)
                second = await notifier.publish(note)
        finally:
            await notifier.close()
            await channel.close()
        return first[0], second

    first, second = asyncio.run(scenario())
    # Then the first notification failed as transient (its job goes back), and the next one went out
    assert isinstance(first, errors.PubSubUnavailable) and "ValueError" in str(first)
    assert second == "m-2"


def test_the_watchdog_reports_each_overdue_stage_once_and_exports_the_count_by_stage() -> None:
    from worker.runtime.pipeline.watchdog import StageClock  # noqa: PLC0415
    from worker.runtime.telemetry import ExportLabels, MonitoringExporter  # noqa: PLC0415

    clock, metrics = StageClock(), Metrics()
    watchdog = Watchdog(clock, metrics, budgets={"fetch": 10.0, "infer": 60.0})
    clock.enter("a", "fetch", message_id="m-a", job_id="job-a")
    clock.enter("b", "infer", message_id="m-b", job_id="job-b")
    start = time.monotonic()
    # Within its budget a job is not reported; past it, once, with its stage
    assert watchdog.check(now=start + 5) == []
    assert [h.job_id for h in watchdog.check(now=start + 11)] == ["job-a"]
    assert watchdog.check(now=start + 12) == []
    # a job that moves on starts its new stage's clock; one that has its decision is no longer watched
    clock.enter("a", "answer", message_id="m-a", job_id="job-a")
    clock.leave("b")
    assert watchdog.check(now=start + 1000) == []  # "answer" has no budget here; b is gone
    assert dict(metrics.overdue) == {"fetch": 1}
    # and the count is exported as jobs_overdue, by stage
    exporter = MonitoringExporter(metrics, ExportLabels("p", "vm-1", "group"), client=None, interval_s=60)
    overdue = [s for s in exporter.time_series() if s.metric.type.endswith("/jobs_overdue")]
    assert [(s.metric.labels["stage"], s.points[0].value.int64_value) for s in overdue] == [("fetch", 1)]


def test_the_watchdogs_metric_has_a_tile_on_the_fleets_dashboard_for_every_stage() -> None:
    import hcl2  # noqa: PLC0415 - the dev extra's HCL parser, as tests/infra uses it

    from worker.runtime.telemetry import METRIC_PREFIX  # noqa: PLC0415

    path = Path(__file__).resolve().parents[2] / "terraform" / "monitoring.tf"
    with path.open(encoding="utf-8") as handle:
        module = hcl2.load(handle, serialization_options=hcl2.SerializationOptions(strip_string_quotes=True))
    charts = [chart for block in module["locals"] for chart in block.get("dashboard_charts", [])]
    (tile,) = [c for c in charts if f"{METRIC_PREFIX}jobs_overdue" in json.dumps(c)]
    assert "stage budget" in tile["title"]
    for stage in STAGES:
        assert f'\\"{stage}\\"' in json.dumps(tile["series"]), stage
