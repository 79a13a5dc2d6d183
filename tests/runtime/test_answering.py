"""The Answerer's idempotency-key rule: a stored result answers a job only if its fingerprint matches."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema

from worker.runtime.pipeline.answering import Answerer, parse, timeline_of
from worker.runtime.settings import WorkerSettings
from worker.shared import contracts, errors
from worker.shared.contracts import Job

from .worker_fakes import FakeNotifier, FakeStore, delivery

SETTINGS = WorkerSettings(
    input_bucket="inputs", transient_retries=1, watch_metadata=False, instance_name="vm"
)


def world() -> tuple[Answerer, FakeStore, FakeNotifier]:
    store, notifier = FakeStore(), FakeNotifier()
    return (
        Answerer(store, notifier, settings=SETTINGS, model_name="m", model_version=lambda: "1"),
        store,
        notifier,
    )


def answer(answerer: Answerer, body: dict[str, Any], data: bytes, **attributes: str) -> Any:
    d = delivery(body, attributes=attributes)
    job = parse(d, SETTINGS)
    assert isinstance(job, Job)
    return d, asyncio.run(
        answerer.answer(
            d,
            job,
            outputs={"classify": {"label": "gear"}},
            error=None,
            timeline=timeline_of(d, started=0.0),
            input_sha256=contracts.input_digest(data),
        )
    )


def test_the_same_job_again_is_answered_from_the_stored_result() -> None:
    answerer, store, notifier = world()
    body = {"job_id": "order-1", "input_uri": "gs://inputs/a.png"}
    answer(answerer, body, b"gear")
    stored = store.results["results/order-1.json"]
    _, again = answer(answerer, body, b"gear")
    assert again == ("succeeded", None, True) and store.results["results/order-1.json"] == stored
    assert [n["result_uri"] for n in notifier.bodies()] == ["gs://results/results/order-1.json"] * 2
    # and each notification names the request it answers (so a client can drop a stale one)
    request = json.loads(stored)["fingerprint"]["request"]
    assert [n["fingerprint"] for n in notifier.bodies()] == [request, request]
    jsonschema.validate(notifier.bodies()[0], contracts.load_schema("notification"))


def test_a_reused_job_id_with_other_bytes_gets_its_own_conflict_result() -> None:
    answerer, store, notifier = world()
    body = {"job_id": "order-1", "input_uri": "gs://inputs/a.png"}
    answer(answerer, body, b"gear")
    first = store.results["results/order-1.json"]
    # the same URI, overwritten with another drawing: another job
    second_delivery, second = answer(answerer, body, b"shaft", client="b")
    assert second == ("failed", "JOB_ID_CONFLICT", False)
    own = contracts.rejected_object_name("results/", second_delivery.message_id)
    document = json.loads(store.results[own])
    assert document["error"]["code"] == "JOB_ID_CONFLICT" and document["outputs"] is None
    assert store.results["results/order-1.json"] == first
    note = notifier.sent[-1]
    assert note.attributes["client"] == "b" and json.loads(note.data)["result_uri"].endswith(own)


def test_a_redelivery_of_another_request_is_a_conflict_without_reading_the_input() -> None:
    answerer, _store, _notifier = world()
    answer(answerer, {"job_id": "order-1", "input_uri": "gs://inputs/a.png"}, b"gear")
    d = delivery({"job_id": "order-1", "input_uri": "gs://inputs/b.png"}, attempt=2)
    job = parse(d, SETTINGS)
    assert isinstance(job, Job)
    answered = asyncio.run(answerer.answer_existing(d, job))
    assert answered is not None and answered.error_code == errors.JobIdConflict.code


def test_namespaces_keep_two_publishers_job_ids_apart() -> None:
    answerer, store, _ = world()
    body = {"job_id": "order-1", "input_uri": "gs://inputs/a.png"}
    _, a = answer(answerer, body, b"gear", namespace="team-a")
    _, b = answer(answerer, {**body, "input_uri": "gs://inputs/b.png"}, b"shaft", namespace="team-b")
    assert a.status == b.status == "succeeded" and not a.duplicate and not b.duplicate
    assert sorted(store.results) == ["results/team-a/order-1.json", "results/team-b/order-1.json"]


def test_a_result_stored_by_a_worker_of_fingerprint_version_1_answers_its_redelivered_job() -> None:
    # Given a job naming no analyses, whose result a worker before fingerprint version 2 wrote
    answerer, store, notifier = world()
    body = {"job_id": "order-1", "input_uri": "gs://inputs/a.png"}
    d = delivery(body, attempt=2)
    job = parse(d, SETTINGS)
    assert isinstance(job, Job) and not job.analyses_named
    old_request = contracts.request_fingerprint(job, d.data, version=1)
    assert old_request != contracts.request_fingerprint(job, d.data)
    fingerprint_v1 = {**contracts.fingerprint_body(old_request, None), "version": 1}
    old = {"status": "succeeded", "error": None, "fingerprint": fingerprint_v1}
    store.results["results/order-1.json"] = json.dumps(old).encode()
    # When it is delivered again to this worker (in flight across the upgrade)
    answered = asyncio.run(answerer.answer_existing(d, job))
    # Then the stored result is its answer, not JOB_ID_CONFLICT, and the notification names the job
    assert answered == ("succeeded", None, True)
    assert notifier.bodies()[-1]["fingerprint"] == contracts.request_fingerprint(job, d.data)


def test_the_result_records_the_default_analyses_the_job_ran() -> None:
    answerer, store, _ = world()
    answer(answerer, {"job_id": "order-1", "input_uri": "gs://inputs/a.png"}, b"gear")
    assert json.loads(store.results["results/order-1.json"])["analyses"] == ["classify", "embed"]
