"""Issue 21 on the client side: namespaces scope result paths; a stored result counts only for its own job.

Unit tests with the fakes of ``client_fakes`` (no network): the namespace attribute and paths, the
fingerprint check in ``submit``'s skip and ``wait``'s sweep, the JOB_ID_CONFLICT lines of the CLI.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from worker.cli import main
from worker.client import answers, sdk
from worker.client.cli_output import outcome_line, report_submit
from worker.shared import contracts
from worker.shared.errors import ClientInputInvalid
from worker.shared.exit_codes import FAILED as EXIT_FAILED
from worker.shared.exit_codes import USAGE as EXIT_USAGE

from .client_fakes import PNG, SETTINGS, FakePublisher, FakeStorage, FakeSubscriber, fake_client

RESULTS = "p-fleet-results"


def stored_result(job: sdk.PreparedJob, status: str = "succeeded", **extra: Any) -> bytes:
    """A result object as the worker writes it for ``job`` (its fingerprint included)."""
    document = {
        "schema_version": 1,
        "job_id": job.job_id,
        "status": status,
        "input_uri": json.loads(job.data)["input_uri"],
        "outputs": {"classify": {"label": "gear"}} if status == "succeeded" else None,
        "error": None,
        "fingerprint": contracts.fingerprint_body(job.identity.request, job.identity.input_sha256),
        **extra,
    }
    return json.dumps(document).encode()


def conflict_result(job: sdk.PreparedJob) -> bytes:
    """The worker's JOB_ID_CONFLICT answer for ``job``, stored under its message id."""
    return stored_result(
        job,
        status="failed",
        outputs=None,
        error={"code": "JOB_ID_CONFLICT", "message": f"job_id {job.job_id!r} already has a result"},
    )


def prepare(job_id: str, source: str, settings: sdk.ClientSettings = SETTINGS) -> sdk.PreparedJob:
    (job,) = sdk.prepare_jobs([sdk.JobRequest(job_id, source)], settings=settings, client_id="c-1")
    return job


@pytest.fixture
def drawings(tmp_path: Path) -> tuple[Path, Path]:
    """Two different local drawings (a and b)."""
    (tmp_path / "a.png").write_bytes(PNG + b"a")
    (tmp_path / "b.png").write_bytes(PNG + b"b")
    return tmp_path / "a.png", tmp_path / "b.png"


# --- the namespace: settings, attribute, paths ------------------------------------------------------------


def test_namespace_comes_from_the_flag_then_fleet_namespace_and_scopes_result_paths() -> None:
    env = {"GOOGLE_CLOUD_PROJECT": "p", "FLEET_NAMESPACE": "team-a"}

    from_env = sdk.ClientSettings.from_env(env)
    from_flag = sdk.ClientSettings.from_env(env, namespace="team-b")
    unset = sdk.ClientSettings.from_env({"GOOGLE_CLOUD_PROJECT": "p", "FLEET_NAMESPACE": ""})

    assert from_env.namespace == "team-a"
    assert from_env.result_object("x") == "results/team-a/x.json"
    assert from_flag.result_uri("x") == "gs://p-fleet-results/results/team-b/x.json"
    assert unset.namespace is None and unset.result_object("x") == "results/x.json"


@pytest.mark.parametrize("bad", ["Team", "-lead", "_rejected", "a" * 64, "a/b"])
def test_an_invalid_namespace_is_a_usage_error(bad: str) -> None:
    with pytest.raises(ClientInputInvalid, match="FLEET_NAMESPACE"):
        sdk.ClientSettings.from_env({"GOOGLE_CLOUD_PROJECT": "p", "FLEET_NAMESPACE": bad})


def test_every_job_carries_the_namespace_attribute_and_the_worker_parses_it(
    drawings: tuple[Path, Path],
) -> None:
    settings = dataclasses.replace(SETTINGS, namespace="team-a")
    requests = [sdk.JobRequest("a", str(drawings[0])), sdk.JobRequest("b", "gs://bucket/b.png")]

    prepared = sdk.prepare_jobs(requests, settings=settings, client_id="c-1")

    assert {job.attributes["namespace"] for job in prepared} == {"team-a"}
    parsed = [sdk.check_job_message(job.data, job.attributes) for job in prepared]
    assert {job.namespace for job in parsed} == {"team-a"}
    assert all(
        "namespace" not in job.attributes
        for job in sdk.prepare_jobs(requests, settings=SETTINGS, client_id="c")
    )


@pytest.mark.parametrize("namespace", [None, "team-a"])
def test_the_namespace_attribute_cannot_be_set_by_hand(namespace: str | None) -> None:
    settings = dataclasses.replace(SETTINGS, namespace=namespace)
    request = sdk.JobRequest("a", "gs://bucket/a.png", attributes={"namespace": "someone-else"})

    with pytest.raises(ClientInputInvalid, match="namespace are set by the client itself"):
        sdk.prepare_jobs([request], settings=settings, client_id="c-1")


def test_the_identity_is_the_workers_fingerprint_of_the_job_and_the_inputs_sha256(
    drawings: tuple[Path, Path],
) -> None:
    local, remote = prepare("a", str(drawings[0])), prepare("b", "gs://bucket/b.png")
    scoped = prepare("a", str(drawings[0]), dataclasses.replace(SETTINGS, namespace="team-a"))

    for job in (local, remote, scoped):
        worker_job = contracts.parse_job(
            contracts.Delivery("", "", "m", job.data, job.attributes, 0.0, 1, 0.0),
            allowed_buckets=frozenset({"p-fleet-inputs", "bucket"}),
        )
        assert isinstance(worker_job, contracts.Job)
        assert job.identity.request == contracts.request_fingerprint(worker_job, job.data)
    assert local.identity.input_sha256 == contracts.input_digest(drawings[0].read_bytes())
    assert remote.identity.input_sha256 is None  # a gs:// input the client did not upload
    assert scoped.identity.request != local.identity.request  # the namespace is part of the job


# --- submit: skip only a result that answers this job --------------------------------------------------


def test_submit_skips_a_job_whose_stored_result_answers_it(drawings: tuple[Path, Path]) -> None:
    job = prepare("shared-1", str(drawings[0]))
    storage = FakeStorage({f"{RESULTS}/results/shared-1.json": stored_result(job)})
    publisher = FakePublisher()

    receipt = fake_client(publisher, storage=storage).submit([sdk.JobRequest("shared-1", str(drawings[0]))])

    assert receipt.published == ()
    assert receipt.already_answered["shared-1"].succeeded
    assert publisher.published == []


def test_submit_publishes_a_job_whose_job_id_holds_another_jobs_result(drawings: tuple[Path, Path]) -> None:
    # Given job shared-1 answered for drawing a
    other = prepare("shared-1", str(drawings[0]))
    storage = FakeStorage({f"{RESULTS}/results/shared-1.json": stored_result(other)})
    publisher = FakePublisher()

    # When shared-1 is submitted for drawing b
    receipt = fake_client(publisher, storage=storage).submit([sdk.JobRequest("shared-1", str(drawings[1]))])

    # Then a's result is not b's answer: b is published (the worker answers it JOB_ID_CONFLICT)
    assert receipt.already_answered == {}
    assert receipt.published == ("shared-1",)
    assert json.loads(publisher.published[0][1])["input_uri"] != json.loads(other.data)["input_uri"]


def test_submit_publishes_when_only_the_options_differ() -> None:
    classify_only = sdk.JobRequest("shared-1", "gs://bucket/a.png", analyses=("classify",))
    (stored,) = sdk.prepare_jobs([classify_only], settings=SETTINGS, client_id="c-1")
    storage = FakeStorage({f"{RESULTS}/results/shared-1.json": stored_result(stored)})

    receipt = fake_client(storage=storage).submit([sdk.JobRequest("shared-1", "gs://bucket/a.png")])

    assert receipt.published == ("shared-1",)


def test_a_result_from_a_worker_without_fingerprints_still_answers(drawings: tuple[Path, Path]) -> None:
    job = prepare("old-1", str(drawings[0]))
    document = json.loads(stored_result(job))
    del document["fingerprint"]
    storage = FakeStorage({f"{RESULTS}/results/old-1.json": json.dumps(document).encode()})

    receipt = fake_client(storage=storage).submit([sdk.JobRequest("old-1", str(drawings[1]))])

    assert "old-1" in receipt.already_answered  # as before fingerprints: the worker cannot tell either


def test_submit_in_a_namespace_reads_and_uploads_in_its_own_paths(drawings: tuple[Path, Path]) -> None:
    other = prepare("shared-1", str(drawings[0]))
    storage = FakeStorage({f"{RESULTS}/results/shared-1.json": stored_result(other)})
    publisher = FakePublisher()
    settings = dataclasses.replace(SETTINGS, namespace="team-b")

    receipt = fake_client(publisher, settings=settings, storage=storage).submit(
        [sdk.JobRequest("shared-1", str(drawings[1]))]
    )

    assert receipt.published == ("shared-1",)
    assert f"{RESULTS}/results/team-b/shared-1.json" in storage.reads
    assert f"{RESULTS}/results/shared-1.json" not in storage.reads
    assert publisher.published[0][2]["namespace"] == "team-b"


# --- wait: the sweep checks the fingerprint of jobs this client published ---------------------------


@pytest.fixture
def quick_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sweep result objects on every quiet pull instead of after 10 s."""
    monkeypatch.setattr(answers, "SWEEP_AFTER_QUIET_S", 0.0)


def test_wait_does_not_take_another_jobs_result_and_finds_the_conflict_answer(
    drawings: tuple[Path, Path], quick_sweeps: None
) -> None:
    # Given client B published shared-1 for drawing b while a's result holds that job id
    a, b = prepare("shared-1", str(drawings[0])), prepare("shared-1", str(drawings[1]))
    storage = FakeStorage({f"{RESULTS}/results/shared-1.json": stored_result(a)})
    client = fake_client(storage=storage)
    receipt = client.submit([sdk.JobRequest("shared-1", str(drawings[1]))])
    message_id = client.publisher.message_ids["shared-1"]

    # When B waits with no notification and only a's result in GCS
    before = client.wait(receipt.job_ids, timeout_s=0.5)["shared-1"]
    # and then the worker's JOB_ID_CONFLICT result for B's message appears
    rejected = f"results/_rejected/{message_id}.json"
    storage.objects[f"{RESULTS}/{rejected}"] = conflict_result(b)
    after = client.wait(receipt.job_ids, timeout_s=2.0)["shared-1"]

    # Then a's result was never B's answer; the conflict is, pointing at B's own object
    assert before.status == "pending"
    assert (after.status, after.error_code) == ("failed", "JOB_ID_CONFLICT")
    assert after.result_uri == f"gs://{RESULTS}/{rejected}"


def test_wait_sweep_takes_a_stored_result_that_answers_the_published_job(
    drawings: tuple[Path, Path], quick_sweeps: None
) -> None:
    storage = FakeStorage()
    client = fake_client(storage=storage)
    receipt = client.submit([sdk.JobRequest("j-1", str(drawings[0]))])
    storage.objects[f"{RESULTS}/results/j-1.json"] = stored_result(prepare("j-1", str(drawings[0])))

    outcome = client.wait(receipt.job_ids, timeout_s=2.0)["j-1"]

    assert outcome.succeeded and outcome.result_uri == f"gs://{RESULTS}/results/j-1.json"


def test_wait_for_ids_this_client_did_not_submit_reports_what_is_stored(drawings: tuple[Path, Path]) -> None:
    someone_elses = prepare("theirs-1", str(drawings[0]))
    storage = FakeStorage({f"{RESULTS}/results/theirs-1.json": stored_result(someone_elses)})

    outcome = fake_client(storage=storage).wait(["theirs-1"], timeout_s=0.5)["theirs-1"]

    assert outcome.succeeded


def test_resubmitting_a_job_id_with_another_input_forgets_the_first_answer(
    drawings: tuple[Path, Path], quick_sweeps: None
) -> None:
    # Given one client that saw shared-1 answered for drawing a
    a = prepare("shared-1", str(drawings[0]))
    storage = FakeStorage({f"{RESULTS}/results/shared-1.json": stored_result(a)})
    client = fake_client(storage=storage)
    first = client.submit([sdk.JobRequest("shared-1", str(drawings[0]))])
    assert first.already_answered["shared-1"].succeeded

    # When it submits shared-1 again for drawing b
    second = client.submit([sdk.JobRequest("shared-1", str(drawings[1]))])

    # Then a's answer is not reported for b
    assert second.published == ("shared-1",)
    assert client.wait(second.job_ids, timeout_s=0.5)["shared-1"].status == "pending"


# --- dead-letter replay in the held job's namespace ---------------------------------------------------


class HoldSubscriber(FakeSubscriber):
    """Holds one dead-lettered job message."""

    def __init__(self, data: bytes, attributes: dict[str, str]) -> None:
        super().__init__()
        message = SimpleNamespace(message_id="m-9", attributes=attributes, data=data, publish_time="t")
        self.held = [SimpleNamespace(ack_id="ack-9", message=message, delivery_attempt=5)]

    def pull(self, request: dict[str, Any], timeout: float) -> Any:
        batch, self.held = self.held, []
        return SimpleNamespace(received_messages=batch)


def test_replay_looks_for_unused_replay_ids_in_the_held_jobs_namespace() -> None:
    held = prepare("dead-1", "gs://bucket/d.png", dataclasses.replace(SETTINGS, namespace="team-a"))
    storage = FakeStorage({f"{RESULTS}/results/team-a/dead-1.replay-1.json": b"{}"})
    publisher = FakePublisher()
    client = fake_client(publisher, HoldSubscriber(held.data, held.attributes), storage=storage)

    (replay,) = client.replay_dead_letters()

    assert replay.job_id == "dead-1.replay-2"
    assert publisher.published[0][2]["namespace"] == "team-a"


# --- the CLI ---------------------------------------------------------------------------------------------


def conflict_outcome() -> sdk.JobOutcome:
    return sdk.JobOutcome(
        "shared-1",
        "failed",
        f"gs://{RESULTS}/results/_rejected/17.json",
        "JOB_ID_CONFLICT",
        "job_id 'shared-1' already has a result that answers a different job",
    )


def test_a_conflict_line_names_the_job_and_says_what_to_do() -> None:
    line = outcome_line(conflict_outcome())

    assert line.startswith("shared-1: failed [JOB_ID_CONFLICT]")
    advice = line.splitlines()[1]
    assert "shared-1 was not run" in advice
    assert "new job_id" in advice and "--namespace" in advice and "FLEET_NAMESPACE" in advice
    assert "\n" not in outcome_line(sdk.JobOutcome("j", "failed", None, "DECODE_FAILED", "bad"))


@pytest.mark.parametrize("as_json", [False, True])
def test_submit_wait_with_a_conflict_exits_1_and_carries_the_code(
    as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    receipt = sdk.SubmitReceipt("c-1", ("shared-1",), ("shared-1",), {}, 1, 0)
    args = argparse.Namespace(json=as_json, wait=True)

    code = report_submit(args, receipt, {"shared-1": conflict_outcome()}, elapsed_s=1.0)

    out = capsys.readouterr().out
    assert code == EXIT_FAILED
    if as_json:
        assert json.loads(out)["jobs"][0]["error"]["code"] == "JOB_ID_CONFLICT"
    else:
        assert "shared-1: failed [JOB_ID_CONFLICT]" in out and "--namespace" in out


def test_cli_bad_namespace_exits_2_before_any_network(
    no_network: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "j-1", "--namespace", "Team_A"]) == EXIT_USAGE
    assert "namespace 'Team_A' must match" in capsys.readouterr().err
    monkeypatch.setenv("FLEET_NAMESPACE", "Team_A")
    assert main(["submit", "gs://bucket/a.png"]) == EXIT_USAGE


# --- notifications: a stale one of an earlier job under the same id is not this job's answer ----------


class NotifyingSubscriber(FakeSubscriber):
    """Delivers the given notifications (data, attributes) on the first pull."""

    def __init__(self, notes: list[tuple[dict[str, Any], dict[str, str]]]) -> None:
        super().__init__()
        self.pending = [
            SimpleNamespace(
                ack_id=f"n-{i}",
                message=SimpleNamespace(data=json.dumps(body).encode(), attributes=attributes),
            )
            for i, (body, attributes) in enumerate(notes)
        ]

    def pull(self, request: dict[str, Any], timeout: float) -> Any:
        batch, self.pending = self.pending, []
        return SimpleNamespace(received_messages=batch)


def notification(
    job: sdk.PreparedJob, status: str, code: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    error = {"code": code, "message": "m"} if code else None
    body = {
        "schema_version": 1,
        "job_id": job.job_id,
        "status": status,
        "result_uri": f"gs://{RESULTS}/results/{job.job_id}.json",
        "error": error,
        "fingerprint": job.identity.request,
    }
    return body, {"job_id": job.job_id, "status": status}


def test_a_stale_notification_of_an_earlier_job_with_the_same_id_is_ignored(
    drawings: tuple[Path, Path],
) -> None:
    # Given this client id published shared-1 for drawing a earlier (its notification is still queued),
    # and now submits shared-1 for another job (other options), which the worker answers JOB_ID_CONFLICT
    a = prepare("shared-1", "gs://bucket/a.png")
    (b,) = sdk.prepare_jobs(
        [sdk.JobRequest("shared-1", "gs://bucket/a.png", analyses=("classify",))],
        settings=SETTINGS,
        client_id="c-1",
    )
    assert a.identity.request != b.identity.request
    subscriber = NotifyingSubscriber([notification(a, "succeeded")])
    client = fake_client(subscriber=subscriber, storage=FakeStorage())
    receipt = client.submit([sdk.JobRequest("shared-1", "gs://bucket/a.png", analyses=("classify",))])

    # When only the stale notification (a's success) has arrived
    before = client.wait(receipt.job_ids, timeout_s=0.5)["shared-1"]
    # and then this job's own answer
    subscriber.pending = NotifyingSubscriber([notification(b, "failed", "JOB_ID_CONFLICT")]).pending
    outcome = client.wait(receipt.job_ids, timeout_s=2.0)["shared-1"]

    # Then the stale success was acked and ignored (the job stayed pending); its own answer is the conflict
    assert before.status == "pending" and "n-0" in subscriber.acked
    assert (outcome.status, outcome.error_code) == ("failed", "JOB_ID_CONFLICT")
    assert outcome.fingerprint == b.identity.request


def test_a_job_naming_no_analyses_is_recognised_whatever_the_fleet_serves() -> None:
    # Given a job naming no analyses, prepared by a client that cannot know the fleet's packages
    job = prepare("page-1", "gs://bucket/page.png")
    # When a worker that serves no drawing model (its default: every analysis it offers) parses it
    worker_job = contracts.parse_job(
        contracts.Delivery("", "", "m", job.data, job.attributes, 0.0, 1, 0.0),
        allowed_buckets=frozenset({"bucket"}),
        offered_analyses=("darkness",),
    )
    assert isinstance(worker_job, contracts.Job) and worker_job.analyses == ("darkness",)
    # Then the client's identity is the worker's fingerprint: its notification and result answer this job
    request = contracts.request_fingerprint(worker_job, job.data)
    assert job.identity.request == request and job.identity.named_by(request)
    assert job.identity.answered_by({"fingerprint": contracts.fingerprint_body(request, None)})


def test_an_answer_of_a_worker_before_fingerprint_version_2_is_recognised() -> None:
    # Given a job naming no analyses, answered by a worker of the recipe before (notification and result)
    job = prepare("page-1", "gs://bucket/page.png")
    old = job.identity.request_v1
    assert old is not None and old != job.identity.request
    subscriber = NotifyingSubscriber(
        [
            (
                notification(job, "succeeded")[0] | {"fingerprint": old},
                {"job_id": job.job_id, "status": "succeeded"},
            )
        ]
    )
    client = fake_client(subscriber=subscriber, storage=FakeStorage())
    receipt = client.submit([sdk.JobRequest("page-1", "gs://bucket/page.png")])
    # Then the wait takes the old worker's notification as this job's answer
    assert client.wait(receipt.job_ids, timeout_s=2.0)["page-1"].succeeded
    # and a result it stored (fingerprint version 1) answers the job too
    stored = {"fingerprint": {"version": 1, "request": old, "input_sha256": None}}
    assert job.identity.answered_by(stored)
