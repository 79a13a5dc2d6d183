"""Issue 22 on the client side: jobs name pages (schema_version 2), results are read page by page.

Unit tests with the fakes of ``client_fakes`` (no network): pages and schema_version checked before
anything is published, the fingerprint covering pages, v1 and v2 result objects (built with the worker's
own ``contracts.build_result``) read into ``JobResult``, and what ``fleet status`` prints for them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from worker.cli import main
from worker.client import sdk
from worker.client.cli_output import result_lines
from worker.client.connections import Connections
from worker.shared import contracts
from worker.shared.errors import ClientInputInvalid, PermanentError
from worker.shared.exit_codes import OK as EXIT_OK
from worker.shared.exit_codes import USAGE as EXIT_USAGE

from .client_fakes import SETTINGS, FakePublisher, FakeStorage, FakeSubscriber, fake_client

RESULTS = "p-fleet-results"
URI = "gs://bucket/set.tif"
CLASSIFY = {"label": "bracket", "confidence": 0.912, "scores": {"bracket": 0.912, "gear": 0.088}}


def published_bodies(publisher: FakePublisher) -> list[dict[str, Any]]:
    return [json.loads(data) for _, data, _ in publisher.published]


def page(number: int, *, blank: bool = False, label: str = "bracket") -> contracts.PageResult:
    outputs = None if blank else {"classify": {**CLASSIFY, "label": label}, "embed": {"embedding": [0.1] * 4}}
    return contracts.PageResult(number, blank, 0.0004 if blank else 0.0213, outputs, 12.1, 3.4)


def result_document(
    *, schema_version: int = 2, page_count: int | None = 3, pages: tuple[contracts.PageResult, ...] = ()
) -> dict[str, Any]:
    """A succeeded result object, as the worker's own builder writes it."""
    v1_outputs = {"classify": CLASSIFY} if schema_version == 1 else None
    return contracts.build_result(
        job_id="set-1",
        input_uri=URI,
        outputs=v1_outputs,
        error=None,
        model={"name": "drawing_analyzer", "version": "1"},
        timeline=contracts.Timeline(1.0, 1.5, 2.0, 2.1, inference_ms=10.2),
        instance="w-0",
        pid=7,
        delivery_attempt=1,
        schema_version=schema_version,
        page_count=page_count,
        pages=pages,
    )


# --- pages and schema_version on submit ------------------------------------------------------------------


def test_jobs_are_published_as_schema_version_2_with_the_pages_asked_for() -> None:
    publisher = FakePublisher()
    client = fake_client(publisher)

    client.submit([sdk.JobRequest("a", URI, may_be_answered=False)], pages=[3, 1])
    client.submit([sdk.JobRequest("b", URI, may_be_answered=False)])

    with_pages, every_page = published_bodies(publisher)
    assert with_pages["schema_version"] == contracts.LATEST_SCHEMA_VERSION == 2
    assert with_pages["pages"] == [3, 1]
    assert every_page["schema_version"] == 2 and "pages" not in every_page
    # the worker's parser reads the published message as a v2 job of pages 1 and 3
    job = sdk.check_job_message(*publisher.published[0][1:])
    assert (job.schema_version, job.pages) == (2, (1, 3))


@pytest.mark.parametrize(
    ("pages", "message"),
    [
        ([0], "integers from 1"),
        ([], "non-empty list"),
        ([1, 1], "more than once"),
        (["1"], "integers from 1"),
        ([True], "integers from 1"),
        (list(range(1, contracts.MAX_PAGES_PER_JOB + 2)), f"a job may analyse {contracts.MAX_PAGES_PER_JOB}"),
    ],
)
def test_bad_pages_are_invalid_pages_before_anything_is_published(pages: list[Any], message: str) -> None:
    publisher, subscriber = FakePublisher(), FakeSubscriber()

    with pytest.raises(ClientInputInvalid) as caught:
        fake_client(publisher, subscriber).submit([sdk.JobRequest("a", URI)], pages=pages)

    assert "job 'a': INVALID_PAGES: " in str(caught.value) and message in str(caught.value)
    assert publisher.published == [] and subscriber.created == []


def test_the_full_page_limit_is_accepted() -> None:
    publisher = FakePublisher()
    limit = list(range(1, contracts.MAX_PAGES_PER_JOB + 1))

    fake_client(publisher).submit([sdk.JobRequest("a", URI, may_be_answered=False)], pages=limit)

    assert published_bodies(publisher)[0]["pages"] == limit


def test_schema_version_1_is_published_for_older_workers_and_refuses_pages() -> None:
    publisher = FakePublisher()
    client = fake_client(publisher)

    client.submit([sdk.JobRequest("a", URI, may_be_answered=False)], schema_version=1)
    with pytest.raises(ClientInputInvalid, match="job 'b': pages needs schema_version 2"):
        client.submit([sdk.JobRequest("b", URI)], schema_version=1, pages=[1])
    with pytest.raises(ClientInputInvalid, match="schema_version 3 is not one this client speaks"):
        client.submit([sdk.JobRequest("c", URI)], schema_version=3)

    assert published_bodies(publisher) == [
        {"schema_version": 1, "job_id": "a", "input_uri": URI, "priority": "batch"}
    ]


def test_a_requests_own_pages_and_version_win_over_the_submit_defaults(tmp_path: Path) -> None:
    manifest = tmp_path / "jobs.jsonl"
    lines = [
        {"job_id": "own", "input_uri": URI, "pages": [2]},
        {"job_id": "default", "input_uri": URI},
    ]
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    requests = [*sdk.read_manifest(manifest), sdk.JobRequest("v1", URI, schema_version=1)]

    jobs = sdk.prepare_jobs(
        sdk.with_job_options(requests, pages=None, schema_version=None), settings=SETTINGS, client_id="c"
    )
    with_defaults = sdk.with_job_options(requests[:2], pages=(1, 3), schema_version=2)

    assert [json.loads(job.data).get("pages") for job in jobs] == [[2], None, None]
    assert [json.loads(job.data)["schema_version"] for job in jobs] == [2, 2, 1]
    assert [r.pages for r in with_defaults] == [(2,), (1, 3)]


def test_a_manifest_pages_that_is_not_a_list_names_its_line(tmp_path: Path) -> None:
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(json.dumps({"job_id": "a", "input_uri": URI, "pages": "1,3"}) + "\n")

    with pytest.raises(ClientInputInvalid, match=r"jobs.jsonl:1: pages must be a list of page numbers"):
        sdk.read_manifest(manifest)


def test_the_identity_covers_pages_so_another_pages_result_is_not_taken() -> None:
    def identity(**options: Any) -> str:
        (job,) = sdk.prepare_jobs([sdk.JobRequest("set-1", URI, **options)], settings=SETTINGS, client_id="c")
        assert job.identity.request == contracts.request_fingerprint(
            sdk.check_job_message(job.data, job.attributes), job.data
        )
        return job.identity.request

    assert len({identity(), identity(pages=(1,)), identity(pages=(2,)), identity(schema_version=1)}) == 4
    assert identity(pages=(3, 1)) == identity(pages=(1, 3))  # a set, as the worker takes it

    # Given set-1 answered for page 1 only, when set-1 is submitted for page 2, it is published
    (page_1,) = sdk.prepare_jobs([sdk.JobRequest("set-1", URI, pages=(1,))], settings=SETTINGS, client_id="c")
    document = {
        **result_document(pages=(page(1),)),
        "fingerprint": contracts.fingerprint_body(page_1.identity.request, None),
    }
    storage = FakeStorage({f"{RESULTS}/results/set-1.json": json.dumps(document).encode()})
    client = fake_client(storage=storage)
    assert client.submit([sdk.JobRequest("set-1", URI)], pages=[2]).published == ("set-1",)
    assert client.submit([sdk.JobRequest("set-1", URI)], pages=[1]).already_answered["set-1"].succeeded


# --- reading results ------------------------------------------------------------------------------------


def test_a_v1_result_reads_as_one_page_with_or_without_page_count() -> None:
    document = result_document(schema_version=1, page_count=None)
    assert "page_count" not in document

    for stored in (document, result_document(schema_version=1, page_count=1)):
        result = sdk.read_result(stored, "gs://r/results/set-1.json")
        assert result.schema_version == 1 and result.status == "succeeded"
        assert result.outputs == {"classify": CLASSIFY}
        assert [(p.page, p.blank, p.outputs) for p in result.pages] == [(1, False, {"classify": CLASSIFY})]
    assert sdk.read_result(document, "").page_count is None
    assert sdk.read_result(result_document(schema_version=1, page_count=1), "").page_count == 1


def test_a_v2_one_page_result_has_outputs_and_one_page() -> None:
    result = sdk.read_result(result_document(page_count=1, pages=(page(1),)), "")

    assert not result.multi_page and result.page_count == 1
    assert result.outputs is not None and result.outputs == result.pages[0].outputs
    assert result.pages[0].timeline == {"preprocess_ms": 12.1, "inference_ms": 3.4}

    blank = sdk.read_result(result_document(page_count=1, pages=(page(1, blank=True),)), "")
    assert blank.outputs is None and blank.pages[0].blank and blank.pages[0].ink == 0.0004


def test_a_multi_page_result_is_read_per_page_and_has_no_single_outputs() -> None:
    document = result_document(page_count=3, pages=(page(1, blank=True), page(2), page(3, label="gear")))

    result = sdk.read_result(document, "gs://r/results/set-1.json")

    assert result.multi_page and result.page_count == 3
    assert [(p.page, p.blank) for p in result.pages] == [(1, True), (2, False), (3, False)]
    assert result.page(1).outputs is None
    third = result.page(3).outputs
    assert third is not None and third["classify"]["label"] == "gear"
    with pytest.raises(
        sdk.MultiPageResult,
        match=r"has 3 pages.*read JobResult.pages \(one entry per analysed page: 1, 2, 3\)",
    ):
        _ = result.outputs
    with pytest.raises(KeyError, match="page 4 was not analysed"):
        result.page(4)


def test_a_failed_v2_result_has_no_pages() -> None:
    document = contracts.build_result(
        job_id="set-1",
        input_uri=URI,
        outputs=None,
        error=PermanentError("the input has 9 pages", code="TOO_MANY_PAGES"),
        model={},
        timeline=contracts.Timeline(1.0, 1.5, 2.0, 2.1),
        instance="w-0",
        pid=7,
        delivery_attempt=1,
        schema_version=2,
        page_count=9,
    )

    result = sdk.read_result(document, "")

    assert result.status == "failed" and result.outcome.error_code == "TOO_MANY_PAGES"
    assert result.pages == () and result.outputs is None
    assert result.to_json()["pages"] == [] and result.to_json()["page_count"] == 9


# --- what fleet status prints -----------------------------------------------------------------------------


def test_a_one_page_result_stays_one_line() -> None:
    one_page = sdk.read_result(result_document(page_count=1, pages=(page(1),)), "")
    v1 = sdk.read_result(result_document(schema_version=1, page_count=None), "")

    job = "model=drawing_analyzer:1  queue_wait=1000.0ms inference=10.2ms"
    assert result_lines(one_page) == [f"  label=bracket (0.912)  embedding[4]  {job}"]
    assert result_lines(v1) == [f"  label=bracket (0.912)  {job}"]


@pytest.fixture
def stored_three_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fleet status`` reads set-1 from a fake bucket: 3 pages, the first blank, the third with symbols."""
    third = page(3, label="gear")
    assert third.outputs is not None
    third.outputs["symbols"] = {"present": ["datum", "tolerance_frame"], "scores": {}, "threshold": 0.5}
    document = result_document(page_count=3, pages=(page(1, blank=True), page(2), third))
    storage = FakeStorage({"local-project-fleet-results/results/set-1.json": json.dumps(document).encode()})
    monkeypatch.setattr(Connections, "storage", lambda self: storage)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "local-project")
    monkeypatch.setenv("FLEET_DEVSTACK_ENV", "/nonexistent")
    for variable in ("FLEET_RESULTS_BUCKET", "FLEET_NAMESPACE"):
        monkeypatch.delenv(variable, raising=False)


def test_status_of_a_three_page_result_prints_the_page_count_and_a_line_per_page(
    stored_three_pages: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "set-1"]) == EXIT_OK

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "set-1: succeeded  gs://local-project-fleet-results/results/set-1.json"
    assert lines[1:] == [
        "  3 pages  model=drawing_analyzer:1  queue_wait=1000.0ms inference=10.2ms",
        "  page 1: blank (ink 0.0004)",
        "  page 2: label=bracket (0.912)  embedding[4]",
        "  page 3: label=gear (0.912)  symbols=datum,tolerance_frame  embedding[4]",
    ]


def test_status_json_carries_the_page_count_and_every_page(
    stored_three_pages: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "set-1", "--json"]) == EXIT_OK

    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "succeeded" and printed["outputs"] is None
    assert printed["page_count"] == 3
    assert [(p["page"], p["blank"], p["outputs"] is None) for p in printed["pages"]] == [
        (1, True, True),
        (2, False, False),
        (3, False, False),
    ]
    assert printed["pages"][1]["timeline"] == {"preprocess_ms": 12.1, "inference_ms": 3.4}


def test_a_subset_of_pages_says_how_many_were_analysed() -> None:
    result = sdk.read_result(result_document(page_count=5, pages=(page(2), page(4))), "")

    assert result_lines(result)[0].startswith("  5 pages, 2 analysed  model=")
    assert [line.split(":")[0] for line in result_lines(result)[1:]] == ["  page 2", "  page 4"]


# --- the CLI on bad pages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pages", "1,x"], "--pages '1,x' must be a comma list of page numbers"),
        (["--pages", "0"], "INVALID_PAGES"),
        (["--pages", "2,2"], "INVALID_PAGES"),
        (["--schema-version", "1", "--pages", "1"], "pages needs schema_version 2"),
    ],
)
def test_cli_bad_pages_exit_2_before_any_network(
    argv: list[str], message: str, no_network: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", URI, *argv]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_a_version_1_answer_is_skipped_only_by_a_version_1_resubmit() -> None:
    # Given set-1 answered as a version 1 job (before the client published version 2)
    (v1_job,) = sdk.prepare_jobs(
        [sdk.JobRequest("set-1", URI, schema_version=1)], settings=SETTINGS, client_id="c"
    )
    document = {
        **result_document(schema_version=1, page_count=1),
        "fingerprint": contracts.fingerprint_body(v1_job.identity.request, None),
    }
    storage = FakeStorage({f"{RESULTS}/results/set-1.json": json.dumps(document).encode()})
    client = fake_client(storage=storage)

    # Then a version 2 resubmit is another request (published; the worker answers JOB_ID_CONFLICT) ...
    assert client.submit([sdk.JobRequest("set-1", URI)]).published == ("set-1",)
    # ... and --schema-version 1 reports the stored answer
    again = client.submit([sdk.JobRequest("set-1", URI)], schema_version=1)
    assert again.published == () and again.already_answered["set-1"].succeeded
