"""Job identity on the local stack: a reused job_id is never answered with another job's result.

A stored result answers a job only when its fingerprint (namespace, job_id, input_uri, analyses, params
and the input's bytes) matches; a job_id reused for another job gets JOB_ID_CONFLICT with its own
notification and its own result object, and the first result stays as it was. Namespaces keep two
publishers' job ids apart. Uses the runs, workers and inputs of test_worker_integration.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from worker.dev import harness
from worker.shared import contracts

from .test_worker_integration import RESULTS_PREFIX, Run, _wait_for, inputs, make_run, wait_started

pytestmark = pytest.mark.integration
__all__ = ["inputs", "make_run"]  # fixtures used here, defined there


def message(run: Run, key: str, job_id: str, uri: str, **attributes: str) -> harness.Message:
    """A job under the run's harness ``key`` (how notifications are told apart) with a chosen job_id."""
    return harness.job_message(key, job_id=job_id, input_uri=uri, run_id=run.run_id, attributes=attributes)


def stored(run: Run, name: str) -> tuple[dict[str, Any], int]:
    blob = run.results_bucket.get_blob(name)
    assert blob is not None, f"no result object {name}"
    generation = int(blob.generation)
    return json.loads(blob.download_as_bytes()), generation


@pytest.mark.timeout(180)
def test_a_reused_job_id_with_another_input_gets_job_id_conflict_and_the_first_result_stays(
    make_run: Callable[..., Run], inputs: list[str]
) -> None:
    run = make_run()
    wait_started(run.worker("w"))
    job_id = run.job_id("shared-1")
    # Given client A's job answered
    run.publish([message(run, "a", job_id, inputs[0], client="a")])
    first = run.wait(["a"])["a"]
    assert [(n.status, n.error_code) for n in first] == [("succeeded", None)]
    first_name = f"{RESULTS_PREFIX}{job_id}.json"
    first_doc, first_generation = stored(run, first_name)
    # When client B publishes another drawing under the same job_id
    (published_b,) = run.publish([message(run, "b", job_id, inputs[1], client="b")])
    (note,) = run.wait(["b"])["b"]
    # Then B is told, on its own notification with its own attributes, that the id is taken
    assert (note.status, note.error_code) == ("failed", "JOB_ID_CONFLICT")
    assert note.attributes["client"] == "b" and note.attributes["job_id"] == job_id
    own_name = contracts.rejected_object_name(RESULTS_PREFIX, published_b.message_id)
    assert note.data["result_uri"] == f"gs://{run.env.results_bucket}/{own_name}"
    # and B's result object is its own: B's input, no outputs, nothing of A's
    own_doc, _ = stored(run, own_name)
    assert own_doc["input_uri"] == inputs[1] and own_doc["outputs"] is None
    assert own_doc["error"]["code"] == "JOB_ID_CONFLICT"
    # and A's result is untouched
    assert stored(run, first_name) == (first_doc, first_generation)
    assert first_doc["input_uri"] == inputs[0]
    # and its fingerprint holds the sha256 of the bytes in GCS (read here with the official client)
    bucket_name, object_name = inputs[0][len("gs://") :].split("/", 1)
    uploaded = run.storage.bucket(bucket_name).blob(object_name).download_as_bytes()
    assert first_doc["fingerprint"]["input_sha256"] == hashlib.sha256(uploaded).hexdigest()


@pytest.mark.timeout(180)
def test_the_same_job_published_twice_is_answered_once_from_the_stored_result(
    make_run: Callable[..., Run], inputs: list[str]
) -> None:
    run = make_run()
    worker = run.worker("w")
    wait_started(worker)
    job_id = run.job_id("twice")
    run.publish([message(run, "first", job_id, inputs[0])])
    run.wait(["first"])
    name = f"{RESULTS_PREFIX}{job_id}.json"
    before = stored(run, name)
    # When the same body is published again (a client retry, a re-run manifest)
    run.publish([message(run, "again", job_id, inputs[0])])
    (note,) = run.wait(["again"])["again"]
    # Then it is answered from the stored result, which stays the only one, unchanged
    assert (note.status, note.data["result_uri"]) == ("succeeded", f"gs://{run.env.results_bucket}/{name}")
    assert stored(run, name) == before
    assert sorted(run.result_objects()) == [name]


@pytest.mark.timeout(180)
def test_a_redelivery_after_a_lost_ack_is_answered_from_the_stored_result(
    make_run: Callable[..., Run], inputs: list[str], pubsub_faults: Any
) -> None:
    # Given a worker on lanes whose deadlines run 10x faster, and acks that are lost (the worker wrote
    # the result and notified, then "crashed" before its ack reached Pub/Sub)
    run = make_run(time_divisor=10)
    wait_started(run.worker("w"))
    pubsub_faults.set_faults(ack_failure_rate=1.0)
    run.publish([run.job("lost-ack", inputs[2])])
    run.wait(["lost-ack"])
    _wait_for(lambda: run.sub_stats().get("acks_dropped", 0) >= 1, "the worker's ack never reached Pub/Sub")
    pubsub_faults.clear_faults()
    first = run.result("lost-ack")
    # When the message comes back after its ack deadline
    _wait_for(
        lambda: len(run.collector.snapshot().get("lost-ack", [])) >= 2,
        "the redelivered message was not answered",
        timeout_s=60,
    )
    time.sleep(0.5)
    # Then it is answered from the stored result: same status and URI, the object unchanged
    notes = run.collector.snapshot()["lost-ack"]
    assert {(n.status, n.data["result_uri"], n.error_code) for n in notes} == {
        ("succeeded", f"gs://{run.env.results_bucket}/{RESULTS_PREFIX}{run.job_id('lost-ack')}.json", None)
    }
    assert run.result("lost-ack") == first and first[0]["delivery_attempt"] == 1


@pytest.mark.timeout(180)
def test_two_clients_using_one_job_id_in_their_own_namespaces_both_succeed(
    make_run: Callable[..., Run], inputs: list[str]
) -> None:
    run = make_run()
    wait_started(run.worker("w"))
    job_id = "order-1042-sheet-1"  # the id two teams will both pick
    # When two clients publish the same job_id for different drawings, each in its namespace
    run.publish(
        [
            message(run, "team-a", job_id, inputs[0], namespace=f"a-{run.run_id}"),
            message(run, "team-b", job_id, inputs[1], namespace=f"b-{run.run_id}"),
        ]
    )
    notes = run.wait(["team-a", "team-b"])
    # Then both succeed, each with its own result at its namespace's path
    for key, uri in (("team-a", inputs[0]), ("team-b", inputs[1])):
        (note,) = notes[key]
        name = f"{RESULTS_PREFIX}{key[-1]}-{run.run_id}/{job_id}.json"
        assert (note.status, note.data["result_uri"]) == (
            "succeeded",
            f"gs://{run.env.results_bucket}/{name}",
        )
        document, _ = stored(run, name)
        assert document["input_uri"] == uri and document["namespace"] == f"{key[-1]}-{run.run_id}"
        assert document["outputs"]["classify"]["label"]
