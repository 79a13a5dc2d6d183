"""Unit tests of the client's pure parts: manifests, targets, validation, parsing, publish bookkeeping.

No network: where a FleetClient is needed, its Pub/Sub and GCS clients are small fakes that record calls,
so "nothing was published" is checked, not assumed.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from google.cloud import pubsub_v1

from worker.cli import main
from worker.client import cli as client_cli
from worker.client import sdk
from worker.shared.errors import ClientInputInvalid, PublishIncomplete
from worker.shared.exit_codes import USAGE as EXIT_USAGE

from .client_fakes import PNG, SETTINGS, FakePublisher, FakeSubscriber, NoStorage, fake_client


def write_manifest(path: Path, *lines: Any) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


# --- manifests ------------------------------------------------------------------------------------------


def test_manifest_lines_become_requests_with_local_paths_relative_to_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    manifest = write_manifest(
        tmp_path / "jobs.jsonl",
        {"job_id": "a", "input": "a.png", "priority": "interactive", "analyses": ["classify"]},
        "",
        {
            "job_id": "b",
            "input_uri": "gs://bucket/b.png",
            "params": {"dpi": 300},
            "attributes": {"team": "x"},
        },
    )

    requests = sdk.read_manifest(manifest)

    assert [r.job_id for r in requests] == ["a", "b"]
    assert requests[0].input == str(tmp_path / "a.png")
    assert requests[0].priority == "interactive" and requests[0].analyses == ("classify",)
    assert requests[1].priority == "batch" and requests[1].attributes == {"team": "x"}
    assert requests[1].origin == f"{manifest}:3"
    assert all(r.may_be_answered for r in requests)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "must be a JSON object"),
        ({"input_uri": "gs://b/o"}, "job_id is required"),
        ({"job_id": "a/b", "input_uri": "gs://b/o"}, "must match"),
        ({"job_id": "..", "input_uri": "gs://b/o"}, "must match"),
        ({"job_id": "a"}, "exactly one of"),
        ({"job_id": "a", "input": "x.png", "input_uri": "gs://b/o"}, "exactly one of"),
        ({"job_id": "a", "input_uri": "http://b/o"}, "is not gs://bucket/object"),
        ({"job_id": "a", "input_uri": "gs://b/o", "colour": 1}, "unknown key(s) colour"),
        ({"job_id": "a", "input_uri": "gs://b/o", "analyses": "classify"}, "analyses must be a list"),
        ({"job_id": "a", "input_uri": "gs://b/o", "attributes": {"k": 1}}, "attributes must be"),
    ],
)
def test_each_bad_manifest_line_is_reported_with_file_and_line(
    tmp_path: Path, line: Any, message: str
) -> None:
    manifest = write_manifest(tmp_path / "jobs.jsonl", {"job_id": "ok", "input_uri": "gs://b/o"}, line)

    with pytest.raises(ClientInputInvalid) as caught:
        sdk.read_manifest(manifest)

    assert f"{manifest}:2: " in str(caught.value)
    assert message in str(caught.value)
    assert "nothing was published" in str(caught.value)


def test_duplicate_job_id_names_both_lines(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path / "jobs.jsonl",
        {"job_id": "a", "input_uri": "gs://b/1"},
        {"job_id": "b", "input_uri": "gs://b/2"},
        {"job_id": "a", "input_uri": "gs://b/3"},
    )

    with pytest.raises(ClientInputInvalid, match=r"jobs.jsonl:3: duplicate job_id 'a' \(first on line 1\)"):
        sdk.read_manifest(manifest)


def test_every_problem_in_a_manifest_is_listed_not_only_the_first(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path / "m.jsonl", "{", {"job_id": "a"}, {"job_id": "b", "input_uri": "gs://b/o"}
    )

    with pytest.raises(ClientInputInvalid) as caught:
        sdk.read_manifest(manifest)

    assert [p.split(": ")[0] for p in caught.value.problems] == [f"{manifest}:1", f"{manifest}:2"]


def test_unreadable_non_utf8_and_empty_manifests(tmp_path: Path) -> None:
    with pytest.raises(ClientInputInvalid, match="cannot read manifest"):
        sdk.read_manifest(tmp_path / "missing.jsonl")
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"job_id": "caf\xe9", "input_uri": "gs://b/o"}\n')
    with pytest.raises(ClientInputInvalid, match=r"latin1.jsonl:1: line is not UTF-8"):
        sdk.read_manifest(bad)
    empty = write_manifest(tmp_path / "empty.jsonl", "")
    with pytest.raises(ClientInputInvalid, match="manifest has no jobs"):
        sdk.read_manifest(empty)


# --- targets and preparation -----------------------------------------------------------------------------


def test_targets_expand_directories_recursively_and_skip_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.png").write_bytes(PNG)
    (tmp_path / "d" / "sub" / "b.png").write_bytes(PNG)
    (tmp_path / "d" / ".hidden.png").write_bytes(PNG)

    requests = sdk.requests_from_targets([str(tmp_path / "d"), "gs://bucket/x.png"], priority="interactive")

    assert [Path(r.input).name for r in requests] == ["a.png", "b.png", "x.png"]
    assert {r.priority for r in requests} == {"interactive"}
    assert len({r.job_id for r in requests}) == 3
    assert not any(r.may_be_answered for r in requests)


def test_missing_target_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ClientInputInvalid, match=r"nope.png: no such file or directory"):
        sdk.requests_from_targets([str(tmp_path / "nope.png")])


def test_identical_content_gets_one_content_addressed_object(tmp_path: Path) -> None:
    (tmp_path / "a.PNG").write_bytes(PNG)
    (tmp_path / "b.png").write_bytes(PNG)
    requests = sdk.requests_from_targets([str(tmp_path / "a.PNG"), str(tmp_path / "b.png")])

    prepared = sdk.prepare_jobs(requests, settings=SETTINGS, client_id="c-1")

    uploads = {job.upload.object_name for job in prepared if job.upload}
    assert len(uploads) == 1
    (name,) = uploads
    assert name.startswith("uploads/sha256/") and name.endswith(".png")
    body = json.loads(prepared[0].data)
    assert body["input_uri"] == f"gs://p-fleet-inputs/{name}"
    assert prepared[0].attributes == {"priority": "batch", "job_id": body["job_id"], "client_id": "c-1"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"job_id": "a", "input": "missing.png"}, "missing.png does not exist"),
        ({"job_id": "a", "input_uri": "gs://b"}, "INPUT_URI_INVALID"),
        ({"job_id": "a", "input_uri": "gs://B/o"}, "INPUT_URI_INVALID"),
        ({"job_id": "a", "input_uri": "gs://bucket/o", "priority": "urgent"}, "UNKNOWN_PRIORITY"),
        ({"job_id": "a", "input_uri": "gs://bucket/o", "analyses": []}, "SCHEMA_INVALID"),
        ({"job_id": "a", "input_uri": "gs://bucket/o", "deadline": "tomorrow"}, "SCHEMA_INVALID"),
        ({"job_id": "a", "input_uri": "gs://bucket/o", "params": [1]}, "SCHEMA_INVALID"),
        (
            {"job_id": "a", "input_uri": "gs://bucket/o", "attributes": {"client_id": "x"}},
            "set by the client",
        ),
        ({"job_id": "a", "input_uri": "gs://bucket/o", "params": {"pad": "x" * 70_000}}, "MESSAGE_TOO_LARGE"),
    ],
)
def test_invalid_jobs_are_rejected_by_the_workers_parser_before_anything_is_published(
    tmp_path: Path, entry: dict[str, Any], message: str
) -> None:
    manifest = write_manifest(tmp_path / "jobs.jsonl", {"job_id": "ok", "input_uri": "gs://bucket/o"}, entry)
    publisher, subscriber = FakePublisher(), FakeSubscriber()
    client = fake_client(publisher, subscriber)

    with pytest.raises(ClientInputInvalid) as caught:
        client.submit(sdk.read_manifest(manifest))

    assert f"{manifest}:2: " in str(caught.value) and message in str(caught.value)
    assert publisher.published == []
    assert subscriber.created == []  # not even the results subscription was created


def test_an_analysis_of_a_package_the_client_never_heard_of_is_left_to_the_worker(tmp_path: Path) -> None:
    # The worker's model packages decide which analyses exist (docs/models.md); it answers UNKNOWN_ANALYSIS
    manifest = write_manifest(
        tmp_path / "jobs.jsonl",
        {"job_id": "a", "input_uri": "gs://bucket/o", "analyses": ["my_score"]},
        {"job_id": "b", "input_uri": "gs://bucket/o", "analyses": ["symbols", "classify", "symbols"]},
    )
    prepared = sdk.prepare_jobs(sdk.read_manifest(manifest), settings=SETTINGS, client_id="c-1")
    assert [json.loads(job.data)["analyses"] for job in prepared] == [
        ["my_score"],
        ["symbols", "classify", "symbols"],
    ]
    # the request fingerprint lists them as the worker's parser does: the drawing model's first
    assert [sdk.check_job_message(job.data, job.attributes).analyses for job in prepared] == [
        ("my_score",),
        ("classify", "symbols"),
    ]


def test_a_directory_given_as_a_manifest_input_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    manifest = write_manifest(tmp_path / "jobs.jsonl", {"job_id": "a", "input": "dir"})

    with pytest.raises(ClientInputInvalid, match="is not a regular file"):
        sdk.prepare_jobs(sdk.read_manifest(manifest), settings=SETTINGS, client_id="c-1")


# --- publishing --------------------------------------------------------------------------------------------


def remote_requests(count: int) -> list[sdk.JobRequest]:
    return [sdk.JobRequest(f"j{i}", f"gs://bucket/o{i}.png", may_be_answered=False) for i in range(count)]


def test_submit_opens_the_filtered_subscription_then_publishes_one_message_per_job() -> None:
    publisher, subscriber = FakePublisher(), FakeSubscriber()
    client = fake_client(publisher, subscriber)

    receipt = client.submit(remote_requests(3))

    assert receipt.published == ("j0", "j1", "j2")
    (created,) = subscriber.created
    assert created["filter"] == f'attributes.client_id = "{client.client_id}"'
    assert created["topic"] == "projects/p/topics/fleet-results"
    assert {attrs["client_id"] for _, _, attrs in publisher.published} == {client.client_id}
    assert publisher.published[0][0] == "projects/p/topics/fleet-jobs"
    client.close()
    assert subscriber.deleted == [client.subscription_path]  # ephemeral: cleaned up


def test_interactive_jobs_are_published_without_the_bulk_batching_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[tuple[Any, FakePublisher]] = []

    def publisher_client(*, batch_settings: Any, publisher_options: Any) -> FakePublisher:
        made.append((batch_settings, FakePublisher()))
        return made[-1][1]

    monkeypatch.setattr(pubsub_v1, "PublisherClient", publisher_client)
    client = sdk.FleetClient(SETTINGS, subscriber=FakeSubscriber(), storage_client=NoStorage())
    requests = remote_requests(4)
    requests[1] = sdk.JobRequest("i1", "gs://bucket/i1.png", "interactive", may_be_answered=False)
    requests[3] = sdk.JobRequest("i3", "gs://bucket/i3.png", "interactive", may_be_answered=False)

    receipt = client.submit(requests)

    assert receipt.published == ("j0", "i1", "j2", "i3")
    by_window = {settings.max_latency: fake for settings, fake in made}
    assert sorted(by_window) == [0.001, 0.02]
    assert [attrs["job_id"] for _, _, attrs in by_window[0.001].published] == ["i1", "i3"]
    assert [attrs["job_id"] for _, _, attrs in by_window[0.02].published] == ["j0", "j2"]


def test_a_durable_client_keeps_its_subscription() -> None:
    subscriber = FakeSubscriber()
    client = sdk.FleetClient(
        SETTINGS,
        client_id="cli-me",
        publisher=FakePublisher(),
        subscriber=subscriber,
        storage_client=NoStorage(),
    )
    with client:
        client.submit(remote_requests(1))
    assert client.subscription_id == "fleet-results-client-cli-me"
    assert subscriber.deleted == []


def test_publish_failure_midway_names_exactly_the_published_and_unpublished_jobs() -> None:
    client = fake_client(FakePublisher(fail_at=frozenset({1, 3})))

    with pytest.raises(PublishIncomplete) as caught:
        client.submit(remote_requests(5))

    assert caught.value.published == ("j0", "j2", "j4")
    assert caught.value.unpublished == ("j1", "j3")
    assert "published 3 of 5" in str(caught.value)


def test_bad_client_ids_are_refused() -> None:
    with pytest.raises(ClientInputInvalid):
        sdk.FleetClient(SETTINGS, client_id="Has Spaces")


# --- parsing ---------------------------------------------------------------------------------------------


def test_notifications_and_result_objects_become_outcomes() -> None:
    data = json.dumps(
        {
            "job_id": "a",
            "status": "failed",
            "result_uri": "gs://r/results/a.json",
            "error": {"code": "X", "message": "m"},
        }
    ).encode()
    outcome = sdk.outcome_from_notification(data, {"job_id": "a", "status": "failed"})
    assert outcome == sdk.JobOutcome("a", "failed", "gs://r/results/a.json", "X", "m")
    assert sdk.outcome_from_notification(b"not json", {}) is None
    assert (
        sdk.outcome_from_notification(json.dumps({"job_id": None, "status": "failed"}).encode(), {}) is None
    )

    result = sdk.outcome_from_result(
        {"job_id": "b", "status": "succeeded", "error": None}, "gs://r/results/b.json"
    )
    assert result.succeeded and result.result_uri == "gs://r/results/b.json"


def test_replay_ids_stay_valid_job_ids() -> None:
    assert sdk.replay_job_id("drawing-7", 2) == "drawing-7.replay-2"
    long_id = sdk.replay_job_id("x" * 128, 1)
    assert len(long_id) == 128 and long_id.endswith(".replay-1")


# --- environment -----------------------------------------------------------------------------------------


def _devstack_env_file(tmp_path: Path) -> Path:
    env_file = tmp_path / ".devstack" / "env"
    env_file.parent.mkdir()
    env_file.write_text(
        "# written by scripts/devstack\n"
        "export PUBSUB_EMULATOR_HOST=127.0.0.1:4001\n"
        "export GOOGLE_CLOUD_PROJECT='local-project'\n"
        "export FLEET_JOBS_TOPIC=fleet-jobs\n"
    )
    (tmp_path / "sub").mkdir()
    return env_file


def test_devstack_env_fills_only_missing_variables(tmp_path: Path) -> None:
    env_file = _devstack_env_file(tmp_path)
    environ = {"GOOGLE_CLOUD_PROJECT": "local-project", "FLEET_JOBS_TOPIC": "my-jobs"}

    used = sdk.apply_devstack_env(environ, start=tmp_path / "sub")

    assert used == env_file
    assert environ == {
        "GOOGLE_CLOUD_PROJECT": "local-project",
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:4001",
        "FLEET_JOBS_TOPIC": "my-jobs",
    }


def test_a_real_project_in_the_environment_never_takes_a_stale_devstack_env(tmp_path: Path) -> None:
    # Given a leftover .devstack/env and a shell set up for a real project (ADC, no emulator hosts)
    _devstack_env_file(tmp_path)
    environ = {"GOOGLE_CLOUD_PROJECT": "real-project"}

    used = sdk.apply_devstack_env(environ, start=tmp_path / "sub")

    # Then nothing of the file is taken: no emulator host would redirect the real project's jobs
    assert used is None
    assert environ == {"GOOGLE_CLOUD_PROJECT": "real-project"}
    settings = sdk.ClientSettings.from_env(environ)
    assert settings.input_bucket == "real-project-fleet-inputs"
    assert sdk.ClientSettings.from_env(environ, project="other").results_bucket == "other-fleet-results"


def test_no_project_is_a_usage_error() -> None:
    with pytest.raises(ClientInputInvalid, match="GOOGLE_CLOUD_PROJECT"):
        sdk.ClientSettings.from_env({})


# --- the CLI on bad input ----------------------------------------------------------------------------------


def test_cli_bad_manifest_exits_2_naming_file_and_line(
    tmp_path: Path, no_network: None, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(
        tmp_path / "jobs.jsonl",
        {"job_id": "a", "input_uri": "gs://bucket/o"},
        {"job_id": "a", "input_uri": "gs://b/2"},
    )

    assert main(["submit", str(manifest)]) == EXIT_USAGE

    assert f"{manifest}:2: duplicate job_id 'a'" in capsys.readouterr().err


def test_cli_missing_input_file_in_json_mode(
    tmp_path: Path, no_network: None, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path / "jobs.jsonl", {"job_id": "a", "input": "gone.png"})

    assert main(["submit", "--json", str(manifest)]) == EXIT_USAGE

    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "CLIENT_INPUT_INVALID"
    assert error["problems"] == [f"{manifest}:1: input file {tmp_path / 'gone.png'} does not exist"]


def test_cli_bad_uri_argument_and_bad_status_id(no_network: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "gs://no-object"]) == EXIT_USAGE
    assert "INPUT_URI_INVALID" in capsys.readouterr().err
    assert main(["status", "bad/id"]) == EXIT_USAGE
    assert main(["dlq", "replay"]) == EXIT_USAGE


def test_default_client_id_is_a_valid_durable_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEET_CLIENT_ID", raising=False)
    assert sdk.check_client_id(client_cli.default_client_id()).startswith("cli-")


class PullingSubscriber(FakeSubscriber):
    """Serves one batch of notifications, then nothing; records acks and nacks."""

    def __init__(self, notifications: list[dict[str, Any]]) -> None:
        super().__init__()
        self.batches = [notifications]

    def pull(self, request: dict[str, Any], timeout: float) -> Any:
        batch = self.batches.pop(0) if self.batches else []
        return SimpleNamespace(
            received_messages=[
                SimpleNamespace(
                    ack_id=f"ack-{i}",
                    message=SimpleNamespace(data=json.dumps(n).encode(), attributes={"job_id": n["job_id"]}),
                )
                for i, n in enumerate(batch)
            ]
        )


def test_results_acks_what_the_consumer_took_and_hands_back_the_rest() -> None:
    notifications = [
        {"job_id": f"j{i}", "status": "succeeded", "result_uri": None, "error": None} for i in range(3)
    ]
    subscriber = PullingSubscriber(notifications)
    client = sdk.FleetClient(
        SETTINGS, publisher=FakePublisher(), subscriber=subscriber, storage_client=NoStorage()
    )

    results = client.results(timeout_s=5)
    first = next(results)
    results.close()

    assert first.job_id == "j0"
    assert subscriber.acked == ["ack-0"]
    assert subscriber.nacked == ["ack-1", "ack-2"]
