"""Job identity: namespaces scope result paths; fingerprints decide whether a stored result answers a job."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import jsonschema
import pytest

from worker.shared import contracts, errors
from worker.shared.contracts import Delivery, Job, Rejection

BUCKETS = frozenset({"inputs"})


def delivery(body: Any, attributes: dict[str, str] | None = None, message_id: str = "m1") -> Delivery:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Delivery("ack", "fleet-jobs-batch", message_id, data, attributes or {}, 0.0, 1, 0.0)


def job(**body: Any) -> Job:
    parsed = contracts.parse_job(
        delivery({"job_id": "order-1", "input_uri": "gs://inputs/a.png", **body}), allowed_buckets=BUCKETS
    )
    assert isinstance(parsed, Job)
    return parsed


def fingerprint(parsed: Job | Rejection, data: bytes = b"") -> str:
    return contracts.request_fingerprint(parsed, data)


def test_a_namespace_attribute_scopes_the_result_path() -> None:
    parsed = contracts.parse_job(
        delivery({"job_id": "order-1", "input_uri": "gs://inputs/a.png"}, {"namespace": "team-a"}),
        allowed_buckets=BUCKETS,
    )
    assert isinstance(parsed, Job) and parsed.namespace == "team-a"
    assert (
        contracts.result_object_name("results/", "order-1", "m1", "team-a") == "results/team-a/order-1.json"
    )
    # and a job without one keeps today's path
    assert contracts.result_object_name("results/", "order-1", "m1") == "results/order-1.json"


@pytest.mark.parametrize("bad", ["", "Team", "_rejected", "-a", "a" * 64, "a/b", "a..b"])
def test_an_invalid_namespace_is_a_permanent_error(bad: str) -> None:
    parsed = contracts.parse_job(
        delivery({"job_id": "order-1", "input_uri": "gs://inputs/a.png"}, {"namespace": bad}),
        allowed_buckets=BUCKETS,
    )
    assert isinstance(parsed, Rejection) and isinstance(parsed.error, errors.InvalidNamespace)
    # and its answer goes to its own message's path, never into another namespace
    assert parsed.job_id is None and parsed.namespace is None


def test_the_request_fingerprint_covers_what_decides_the_answer() -> None:
    base = fingerprint(job())
    # what decides the answer changes it
    assert fingerprint(job(input_uri="gs://inputs/b.png")) != base
    assert fingerprint(job(analyses=["classify"])) != base
    assert fingerprint(job(params={"threshold": 0.5})) != base
    assert fingerprint(job(job_id="order-2")) != base
    # when it runs does not
    assert fingerprint(job(priority="interactive")) == base
    assert fingerprint(job(deadline="2099-01-01T00:00:00Z")) == base
    # and neither does the order of params keys or of analyses (a set, resolved in different orders)
    resolved = job(analyses=["classify", "embed"])
    assert fingerprint(resolved) == fingerprint(replace(resolved, analyses=("embed", "classify")))
    assert fingerprint(job(params={"a": 1, "b": 2})) == fingerprint(job(params={"b": 2, "a": 1}))


def test_a_namespace_changes_the_fingerprint() -> None:
    plain = job()
    scoped = contracts.parse_job(
        delivery({"job_id": "order-1", "input_uri": "gs://inputs/a.png"}, {"namespace": "team-b"}),
        allowed_buckets=BUCKETS,
    )
    assert isinstance(scoped, Job) and fingerprint(scoped) != fingerprint(plain)


def test_a_rejection_is_fingerprinted_by_its_raw_message() -> None:
    one = contracts.parse_job(delivery(b'{"job_id": "x", "input_uri": 3}'), allowed_buckets=BUCKETS)
    two = contracts.parse_job(delivery(b'{"job_id": "x", "input_uri": 4}'), allowed_buckets=BUCKETS)
    assert isinstance(one, Rejection) and isinstance(two, Rejection)
    assert fingerprint(one, b'{"job_id": "x", "input_uri": 3}') != fingerprint(
        two, b'{"job_id": "x", "input_uri": 4}'
    )


def stored(request: str, input_sha256: str | None) -> dict[str, Any]:
    return {"fingerprint": contracts.fingerprint_body(request, input_sha256)}


def test_a_stored_result_answers_only_the_same_job() -> None:
    request, data = fingerprint(job()), contracts.input_digest(b"gear")
    # the same request and input: a redelivery or a duplicate publish
    assert contracts.answers_same_job(stored(request, data), request, data)
    # the same request before the input is read (the redelivery shortcut, the dead-letter handler)
    assert contracts.answers_same_job(stored(request, data), request, None)
    assert contracts.answers_same_job(stored(request, None), request, data)
    # another request, or the same request over other bytes: another job
    assert not contracts.answers_same_job(stored(fingerprint(job(job_id="x")), data), request, data)
    assert not contracts.answers_same_job(stored(request, contracts.input_digest(b"shaft")), request, data)
    # a result from a worker that predates fingerprints is taken as this job's, as before
    assert contracts.answers_same_job({"status": "succeeded"}, request, data)


def test_a_result_with_namespace_and_fingerprint_matches_the_schema() -> None:
    document = contracts.build_result(
        job_id="order-1",
        input_uri="gs://inputs/a.png",
        outputs={},
        error=None,
        model={"name": "m", "version": "1"},
        timeline=contracts.Timeline(1.0, 2.0, 3.0, 4.0),
        instance="vm",
        pid=1,
        delivery_attempt=1,
        fingerprint=contracts.fingerprint_body(fingerprint(job()), contracts.input_digest(b"x")),
        namespace="team-a",
    )
    jsonschema.validate(document, contracts.load_schema("result"))
    conflict = errors.JobIdConflict("taken")
    assert conflict.code == "JOB_ID_CONFLICT" and isinstance(conflict, errors.PermanentError)


def test_a_job_naming_no_analyses_has_one_fingerprint_whatever_the_fleet_offers() -> None:
    body = {"job_id": "order-1", "input_uri": "gs://inputs/a.png"}
    # Given the same message parsed by a fleet with the drawing model, one without it, and a client
    with_drawing = contracts.parse_job(
        delivery(body), allowed_buckets=BUCKETS, offered_analyses=("classify", "embed", "symbols")
    )
    without = contracts.parse_job(delivery(body), allowed_buckets=BUCKETS, offered_analyses=("darkness",))
    assert isinstance(with_drawing, Job) and isinstance(without, Job)
    # Then each resolves its own default, the rule of contracts.default_analyses ...
    assert with_drawing.analyses == ("classify", "embed") and without.analyses == ("darkness",)
    assert not with_drawing.analyses_named and not without.analyses_named
    # ... and the request fingerprint is one: it names the default, not the list
    assert fingerprint(with_drawing) == fingerprint(without) == fingerprint(job())
    # while a job naming the same analyses is another request
    assert fingerprint(job(analyses=["classify", "embed"])) != fingerprint(with_drawing)


def test_a_job_naming_its_analyses_has_the_same_fingerprint_under_both_recipes() -> None:
    named = job(analyses=["embed", "classify"])
    assert contracts.request_fingerprint(named, b"", version=1) == contracts.request_fingerprint(named, b"")
    rejected = contracts.parse_job(delivery(b"[]"), allowed_buckets=BUCKETS)
    assert contracts.request_fingerprint(rejected, b"[]", version=1) == fingerprint(rejected, b"[]")


def test_a_result_stored_under_fingerprint_version_1_still_answers_its_job() -> None:
    # Given a job naming no analyses, answered by a worker of the recipe before (the default resolved)
    default = job()
    old = {"fingerprint": {"version": 1, "request": contracts.request_fingerprint(default, b"", version=1)}}
    new_request = fingerprint(default)
    old_request = contracts.request_fingerprint(default, b"", version=1)
    # Then a worker of this recipe, knowing the job's version 1 fingerprint, takes it as the job's answer
    assert contracts.answers_same_job(old, new_request, None, request_v1=old_request)
    # but not for another job, nor without that fingerprint (the current one differs)
    other = contracts.request_fingerprint(job(job_id="order-2"), b"", version=1)
    assert not contracts.answers_same_job(old, new_request, None, request_v1=other)
    assert not contracts.answers_same_job(old, new_request, None)
    # and a result of this recipe is compared with the current fingerprint only
    assert contracts.answers_same_job(stored(new_request, None), new_request, None, request_v1=old_request)
    assert not contracts.answers_same_job(
        stored(old_request, None), new_request, None, request_v1=old_request
    )


@pytest.mark.parametrize("version", [1, 2])
def test_the_result_records_the_analyses_that_ran(version: int) -> None:
    document = contracts.build_result(
        job_id="order-1",
        input_uri="gs://inputs/a.png",
        outputs={"classify": {"label": "gear", "scores": {"gear": 1.0}}},
        error=None,
        model={"name": "drawing_analyzer", "version": "1"},
        timeline=contracts.Timeline(1.0, 2.0, 3.0, 4.0),
        instance="vm",
        pid=1,
        delivery_attempt=1,
        schema_version=version,
        page_count=1,
        analyses=("classify",),
    )
    assert document["analyses"] == ["classify"]
    jsonschema.validate(document, contracts.load_schema("result", version))
