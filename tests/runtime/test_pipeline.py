"""The pipeline's orchestration with in-memory fakes: decisions, write-once, notifications, lanes, drain."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from worker.runtime.pipeline.batching import Batcher
from worker.runtime.pipeline.core import Pipeline
from worker.runtime.pipeline.gate import InteractiveGate
from worker.runtime.pipeline.outage import Health
from worker.runtime.pipeline.ports import Model, Ports, Preprocessor
from worker.runtime.settings import WorkerSettings
from worker.shared import errors

from .worker_fakes import (
    FakeModel,
    FakeNotifier,
    FakeSource,
    FakeStore,
    delivery,
    drawing_catalog,
    fake_preprocess,
)

SETTINGS = WorkerSettings(
    input_bucket="inputs",
    pipeline_slots=8,
    max_batch_size=4,
    max_batch_delay_ms=5,
    settle_interval_ms=1,
    idle_poll_max_ms=5,
    transient_retries=2,
    watch_metadata=False,
    instance_name="test-vm",
)


def job(job_id: str, **extra: Any) -> dict[str, Any]:
    return {"job_id": job_id, "input_uri": "gs://inputs/in/ok.png", **extra}


class World:
    def __init__(
        self, settings: WorkerSettings = SETTINGS, preprocess: Preprocessor = fake_preprocess
    ) -> None:
        self.source, self.store, self.model, self.notifier = (
            FakeSource(),
            FakeStore(),
            FakeModel(),
            FakeNotifier(),
        )
        self.pipeline = Pipeline(
            settings,
            Ports(
                self.source,
                self.store,
                self.store,
                drawing_catalog(),
                {"drawing_analyzer": self.model},
                self.notifier,
                preprocess,
            ),
        )

    async def run_until(self, notifications: int, timeout_s: float = 5.0) -> int:
        task = asyncio.create_task(self.pipeline.run())
        async with asyncio.timeout(timeout_s):
            while len(self.notifier.sent) < notifications:
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)
        self.pipeline.drain("test")
        return await task

    def result(self, job_id: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.store.results[f"results/{job_id}.json"])
        return document


def test_given_jobs_when_run_then_each_gets_one_result_one_notification_and_an_ack() -> None:
    w = World()
    for i in range(6):
        w.source.put(delivery(job(f"j{i}"), attributes={"tenant": "acme", "job_id": f"j{i}"}))
    assert asyncio.run(w.run_until(6)) == 0
    assert len(w.store.results) == 6
    result = w.result("j0")
    assert result["status"] == "succeeded"
    assert result["outputs"]["classify"]["label"] == "flange"
    assert len(result["outputs"]["embed"]["embedding"]) == 128
    assert result["worker"]["instance"] == "test-vm"
    assert len(w.source.acked) == 6 and not w.source.nacked
    note = w.notifier.sent[0]
    assert note.attributes["tenant"] == "acme" and note.attributes["status"] == "succeeded"
    assert max(w.model.batches) > 1, "jobs should be micro-batched"


def test_given_malformed_message_then_failure_on_first_delivery_and_ack() -> None:
    w = World()
    w.source.put(delivery(b"{not json"))
    asyncio.run(w.run_until(1))
    body = w.notifier.bodies()[0]
    assert body["status"] == "failed" and body["error"]["code"] == "MALFORMED_JOB"
    assert body["job_id"] is None and "_rejected/" in body["result_uri"]
    assert w.notifier.sent[0].attributes["error_code"] == "MALFORMED_JOB"
    assert len(w.source.acked) == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (job("a", input_uri="gs://elsewhere/x.png"), "INPUT_NOT_ALLOWED"),
        (job("a", input_uri="gs://inputs/missing.png"), "INPUT_NOT_FOUND"),
        (job("a", analyses=["segment"]), "UNKNOWN_ANALYSIS"),
        (job("a", priority="urgent"), "UNKNOWN_PRIORITY"),
        (job("a", schema_version=3), "UNSUPPORTED_SCHEMA_VERSION"),
        (job("../a"), "INVALID_JOB_ID"),
    ],
)
def test_given_permanent_error_then_failed_result_and_ack(body: dict[str, Any], code: str) -> None:
    w = World()
    w.source.put(delivery(body))
    asyncio.run(w.run_until(1))
    assert w.notifier.bodies()[0]["error"]["code"] == code
    assert len(w.store.results) == 1 and len(w.source.acked) == 1


def test_given_undecodable_image_then_failed() -> None:
    w = World()
    w.store.objects["in/bad.png"] = b"garbage"
    w.source.put(delivery(job("bad", input_uri="gs://inputs/in/bad.png")))
    asyncio.run(w.run_until(1))
    assert w.result("bad")["error"]["code"] == "IMAGE_UNDECODABLE"


def test_given_poisoned_tensor_in_batch_then_only_it_fails() -> None:
    w = World()
    w.store.objects["in/poison.png"] = b"poison"
    w.source.put(delivery(job("p", input_uri="gs://inputs/in/poison.png")))
    for i in range(3):
        w.source.put(delivery(job(f"ok{i}")))
    asyncio.run(w.run_until(4))
    assert w.result("p")["error"]["code"] == "MODEL_REJECTED"
    assert all(w.result(f"ok{i}")["status"] == "succeeded" for i in range(3))


def test_given_past_deadline_then_expired_not_run() -> None:
    w = World()
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    w.source.put(delivery(job("late", deadline=past)))
    asyncio.run(w.run_until(1))
    assert w.result("late")["status"] == "expired"
    assert w.notifier.bodies()[0]["error"]["code"] == "DEADLINE_EXCEEDED"
    assert w.model.batches == []


def test_given_result_exists_when_redelivered_then_renotify_ack_and_never_overwrite() -> None:
    w = World()
    w.store.results["results/dup.json"] = json.dumps({"status": "succeeded", "error": None}).encode()
    w.source.put(delivery(job("dup")))  # first attempt: runs, 412 on write
    w.source.put(delivery(job("dup"), attempt=2))  # redelivery: answered from the stored result
    asyncio.run(w.run_until(2))
    assert json.loads(w.store.results["results/dup.json"]) == {"status": "succeeded", "error": None}
    assert [b["status"] for b in w.notifier.bodies()] == ["succeeded", "succeeded"]
    assert len(w.source.acked) == 2
    assert len(w.model.batches) <= 1, "the redelivery must not be re-run"


def test_given_storage_down_then_bounded_retries_then_nack() -> None:
    w = World()
    w.store.fail_reads = True
    w.source.put(delivery(job("t")))

    async def scenario() -> None:
        task = asyncio.create_task(w.pipeline.run())
        async with asyncio.timeout(5):
            while not w.source.nacked:
                await asyncio.sleep(0.01)
        w.pipeline.drain("test")
        await task

    asyncio.run(scenario())
    assert w.source.nacked and not w.source.acked and not w.store.results


def test_given_job_over_max_processing_then_processing_timeout() -> None:
    w = World(dataclasses.replace(SETTINGS, max_processing_s=0.2))
    w.model.delay_s = 1.0
    w.source.put(delivery(job("slow")))
    asyncio.run(w.run_until(1))
    assert w.result("slow")["error"]["code"] == "PROCESSING_TIMEOUT"
    assert w.source.acked


def test_pull_never_asks_for_more_than_free_slots_and_interactive_first() -> None:
    w = World()
    for i in range(20):
        w.source.put(delivery(job(f"b{i}")))
    w.source.put(
        delivery(
            job("i0", priority="interactive"),
            subscription="fleet-jobs-interactive",
            attributes={"priority": "interactive"},
        )
    )
    asyncio.run(w.run_until(21))
    assert all(size <= SETTINGS.pipeline_slots for _, size in w.source.pull_sizes)
    assert w.source.pull_sizes[0][0] == "fleet-jobs-interactive"
    assert w.model.interactive_flags[0] is True


def test_given_triton_outage_then_nack_and_exit_nonzero_after_limit() -> None:
    w = World(dataclasses.replace(SETTINGS, triton_outage_exit_s=0.3))
    w.model.fail = errors.InferenceUnavailable("down")
    w.source.put(delivery(job("x")))

    async def scenario() -> int:
        return await asyncio.wait_for(w.pipeline.run(), 10)

    assert asyncio.run(scenario()) == 3
    assert w.source.nacked and not w.store.results


def test_drain_stops_pulling_and_finishes_in_flight() -> None:
    w = World()
    w.model.delay_s = 0.1
    w.source.put(delivery(job("a")))

    async def scenario() -> int:
        task = asyncio.create_task(w.pipeline.run())
        await asyncio.sleep(0.05)
        w.pipeline.drain("sigterm")
        w.source.put(delivery(job("late")))
        return await task

    assert asyncio.run(scenario()) == 0
    assert "results/a.json" in w.store.results and "results/late.json" not in w.store.results
    assert len(w.source.queues["fleet-jobs-batch"]) == 1


def test_drain_budget_exceeded_then_nack() -> None:
    w = World(dataclasses.replace(SETTINGS, drain_budget_s=0.1))
    w.model.delay_s = 2.0
    w.source.put(delivery(job("a")))

    async def scenario() -> int:
        task = asyncio.create_task(w.pipeline.run())
        await asyncio.sleep(0.05)
        w.pipeline.drain("sigterm")
        return await task

    assert asyncio.run(scenario()) == 0
    assert w.source.nacked and not w.store.results


class GatedModel(FakeModel):
    """Batch requests block until ``release`` is set; interactive requests answer at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.batch_in_flight = 0
        self.max_batch_in_flight = 0

    async def infer(self, inputs: dict[str, Any], *, interactive: bool) -> dict[str, Any]:
        if not interactive:
            self.batch_in_flight += 1
            self.max_batch_in_flight = max(self.max_batch_in_flight, self.batch_in_flight)
            await self.release.wait()
            self.batch_in_flight -= 1
        return await super().infer(inputs, interactive=interactive)


TENSOR = {"IMAGE": np.zeros((1, 4, 4), dtype=np.float32)}


@contextlib.asynccontextmanager
async def running(model: Model, gate: InteractiveGate | None = None) -> AsyncIterator[Batcher]:
    """A Batcher of 4-tensor requests (1 ms delay, one batch request in flight) running on ``model``."""
    batcher = Batcher(model, Health(), max_size=4, max_delay_ms=1, retries=1, batch_requests=1, gate=gate)
    runner = asyncio.create_task(batcher.run())
    try:
        yield batcher
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


def test_an_interactive_tensor_goes_alone_while_batch_requests_are_in_flight() -> None:
    async def scenario() -> None:
        model = GatedModel()
        async with running(model) as batcher:
            # Given 6 batch tensors: one request of 4 goes to the model and blocks there, 2 wait their turn
            batch = [batcher.submit(TENSOR, interactive=False) for _ in range(6)]
            await asyncio.sleep(0.02)
            assert model.batches == [] and model.batch_in_flight == 1
            # When an interactive tensor arrives
            answer = await asyncio.wait_for(batcher.submit(TENSOR, interactive=True), timeout=1)
            # Then it is answered while the batch request is still in flight, in a request of its own
            assert len(answer[0]["CLASS_PROBS"]) == 7  # one row: six part classes + not_a_drawing
            assert model.batches == [1] and model.interactive_flags == [True]
            assert not any(f.done() for f in batch)
            # and the batch work follows, never more than one batch request in flight
            model.release.set()
            await asyncio.wait_for(asyncio.gather(*batch), timeout=1)
            assert model.batches == [1, 4, 2] and model.interactive_flags == [True, False, False]
            assert model.max_batch_in_flight == 1

    asyncio.run(scenario())


def test_no_batch_request_is_sent_while_interactive_work_is_on_its_way() -> None:
    async def scenario() -> None:
        model, gate = FakeModel(), InteractiveGate(max_wait_s=5.0)
        async with running(model, gate) as batcher:
            # Given an interactive job on its way to inference (decoding, say)
            with gate.entered():
                # When a full batch is ready meanwhile
                batch = [batcher.submit(TENSOR, interactive=False) for _ in range(4)]
                await asyncio.sleep(0.05)
                # Then it waits; the interactive tensor goes first when it comes
                assert model.batches == []
                await asyncio.wait_for(batcher.submit(TENSOR, interactive=True), timeout=1)
                assert model.batches == [1]
            # and the batch goes as soon as the interactive job leaves
            await asyncio.wait_for(asyncio.gather(*batch), timeout=1)
            assert model.batches == [1, 4] and model.interactive_flags == [True, False]

    asyncio.run(scenario())


def test_a_hold_on_batch_requests_is_bounded() -> None:
    async def scenario() -> float:
        gate = InteractiveGate(max_wait_s=0.1)
        async with running(FakeModel(), gate) as batcher:
            # Given interactive jobs that overlap for longer than max_wait_s (a stream of them)
            with gate.entered():
                started = time.monotonic()
                with gate.entered():
                    batch = [batcher.submit(TENSOR, interactive=False) for _ in range(4)]
                    # Then batch work is answered after the bound, while still held
                    await asyncio.wait_for(asyncio.gather(*batch), timeout=2)
                    return time.monotonic() - started

    waited = asyncio.run(scenario())
    assert 0.09 <= waited < 2
