"""Pages in the contract (issue 22): job schema_version 2 and its ``pages``, the v2 result, the v1 result's
additive ``page_count``; each checked against the JSON Schemas the clients read."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from worker.shared import contracts, errors
from worker.shared.contracts import Delivery, Job, PageResult, Rejection, Timeline

BUCKETS = frozenset({"inputs"})
TIMELINE = Timeline(published=1.7e9, leased=1.7e9 + 1, started=1.7e9 + 1, finished=1.7e9 + 2, inference_ms=7)
CLASSIFY = {"classify": {"label": "gear", "scores": {"gear": 0.9, "flange": 0.1}}}


def parse(body: Any) -> Job | Rejection:
    data = json.dumps(body).encode()
    return contracts.parse_job(
        Delivery("ack", "fleet-jobs-batch", "m1", data, {}, 0.0, 1, 0.0), allowed_buckets=BUCKETS
    )


def v2(**body: Any) -> dict[str, Any]:
    return {"schema_version": 2, "job_id": "d-1", "input_uri": "gs://inputs/set.pdf", **body}


def result(**kw: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "job_id": "d-1",
        "input_uri": "gs://inputs/set.pdf",
        "outputs": None,
        "error": None,
        "model": {"name": "m", "version": "1"},
        "timeline": TIMELINE,
        "instance": "vm",
        "pid": 1,
        "delivery_attempt": 1,
    }
    return contracts.build_result(**{**defaults, **kw})


def test_the_worker_speaks_versions_1_and_2_and_a_job_without_one_is_version_1() -> None:
    assert {1, 2} == contracts.SUPPORTED_SCHEMA_VERSIONS and contracts.LATEST_SCHEMA_VERSION == 2
    old = parse({"job_id": "a", "input_uri": "gs://inputs/a.png"})
    assert isinstance(old, Job) and old.schema_version == 1 and old.pages is None


def test_a_v2_job_names_its_pages_and_they_are_kept_in_page_order() -> None:
    job = parse(v2(pages=[3, 1]))
    assert isinstance(job, Job) and job.schema_version == 2 and job.pages == (1, 3)
    jsonschema.validate(v2(pages=[3, 1]), contracts.load_schema("job", 2))
    every = parse(v2())
    assert isinstance(every, Job) and every.pages is None


@pytest.mark.parametrize(
    "pages",
    [[], [0], [-1], [1, 1], ["1"], [1.0], [True], "1", {"1": 1}, list(range(1, 66))],
)
def test_bad_pages_are_invalid_pages_at_parse_time_and_the_schema_refuses_them_too(pages: Any) -> None:
    rejected = parse(v2(pages=pages))
    assert isinstance(rejected, Rejection) and isinstance(rejected.error, errors.InvalidPages)
    assert rejected.error.code == "INVALID_PAGES" and rejected.job_id == "d-1"
    assert rejected.schema_version == 2  # its failed result is a version 2 document
    if pages == [1.0]:
        return  # JSON Schema counts 1.0 as an integer; the worker takes only integer literals
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(v2(pages=pages), contracts.load_schema("job", 2))


def test_pages_in_a_v1_job_is_an_unknown_field() -> None:
    body = {"job_id": "a", "input_uri": "gs://inputs/a.png", "pages": [1]}
    rejected = parse(body)
    assert isinstance(rejected, Rejection) and rejected.error.code == "SCHEMA_INVALID"
    assert "pages" in rejected.error.message and rejected.schema_version == 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, contracts.load_schema("job", 1))


def test_the_fingerprint_of_a_v2_job_covers_its_pages_and_a_v1_recipe_is_unchanged() -> None:
    def fingerprint(body: dict[str, Any], version: int = contracts.FINGERPRINT_VERSION) -> str:
        job = parse(body)
        assert isinstance(job, Job)
        return contracts.request_fingerprint(job, b"", version=version)

    assert fingerprint(v2(pages=[1, 3])) == fingerprint(v2(pages=[3, 1]))  # a set
    assert len({fingerprint(v2(pages=[1])), fingerprint(v2(pages=[2])), fingerprint(v2())}) == 3
    v1 = {"job_id": "d-1", "input_uri": "gs://inputs/set.pdf"}
    assert fingerprint(v1) != fingerprint(v2())  # the version is part of the request
    # a version 1 job's recipe as it was before pages existed (fingerprint version 1, the analyses as
    # resolved): results stored then still match; the current recipe names the default instead
    recipe: dict[str, object] = {
        "schema_version": 1,
        "namespace": None,
        "job_id": "d-1",
        "input_uri": "gs://inputs/set.pdf",
        "analyses": ["classify", "embed"],
        "params": {},
    }
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert fingerprint(v1, version=1) == contracts.input_digest(canonical.encode())
    recipe["analyses"] = "default"
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert fingerprint(v1) == contracts.input_digest(canonical.encode())


def test_a_v2_result_of_several_pages_reads_from_pages_and_matches_the_schema() -> None:
    pages = (
        PageResult(2, blank=False, ink=0.0213, outputs=CLASSIFY, preprocess_ms=12.14, inference_ms=3.4),
        PageResult(1, blank=True, ink=0.0001, outputs=None, preprocess_ms=10.0),
    )
    document = result(schema_version=2, page_count=3, pages=pages, outputs=CLASSIFY)
    jsonschema.validate(document, contracts.load_schema("result", 2))
    assert document["schema_version"] == 2 and document["page_count"] == 3
    assert document["outputs"] is None  # more than one page: read pages
    assert [p["page"] for p in document["pages"]] == [1, 2]
    assert document["pages"][0] == {
        "page": 1,
        "blank": True,
        "ink": 0.0001,
        "outputs": None,
        "timeline": {"preprocess_ms": 10.0, "inference_ms": 0.0},
    }
    assert document["pages"][1]["outputs"] == CLASSIFY
    assert document["pages"][1]["timeline"] == {"preprocess_ms": 12.1, "inference_ms": 3.4}
    with pytest.raises(jsonschema.ValidationError):  # the v1 schema does not describe it
        jsonschema.validate(document, contracts.load_schema("result", 1))


def test_a_v2_result_of_one_page_carries_its_outputs_at_the_top_too() -> None:
    page = PageResult(1, blank=False, ink=0.05, outputs=CLASSIFY)
    document = result(schema_version=2, page_count=1, pages=(page,))
    jsonschema.validate(document, contracts.load_schema("result", 2))
    assert document["outputs"] == CLASSIFY == document["pages"][0]["outputs"]
    blank = result(schema_version=2, page_count=1, pages=(PageResult(1, blank=True, ink=0.0, outputs=None),))
    assert blank["outputs"] is None and blank["pages"][0]["blank"] is True


def test_a_failed_v2_result_has_no_pages_and_a_page_count_only_when_the_document_was_read() -> None:
    unread = result(schema_version=2, error=errors.InputNotFound("no such object"))
    jsonschema.validate(unread, contracts.load_schema("result", 2))
    assert unread["pages"] == [] and unread["page_count"] is None and unread["status"] == "failed"
    past_the_end = result(
        schema_version=2,
        error=errors.PageNotFound("page 4 of 3"),
        page_count=3,
        pages=(PageResult(1, blank=False, ink=0.1, outputs=CLASSIFY),),
    )
    jsonschema.validate(past_the_end, contracts.load_schema("result", 2))
    assert past_the_end["pages"] == [] and past_the_end["page_count"] == 3
    assert past_the_end["error"]["code"] == "PAGE_NOT_FOUND" and past_the_end["outputs"] is None


def test_a_v1_result_gains_only_the_additive_page_count() -> None:
    before = result(outputs=CLASSIFY)
    after = result(outputs=CLASSIFY, page_count=1)
    assert "page_count" not in before and "pages" not in after
    assert {k: v for k, v in after.items() if k != "page_count"} == before and after["page_count"] == 1
    jsonschema.validate(after, contracts.load_schema("result", 1))
    multi = result(error=errors.MultiPageInput("the input has 2 pages"), page_count=2)
    jsonschema.validate(multi, contracts.load_schema("result", 1))
    assert multi["schema_version"] == 1 and multi["error"]["code"] == "MULTI_PAGE_INPUT"
