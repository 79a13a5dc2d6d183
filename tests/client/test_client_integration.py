"""The client on the local stack: real emulators, real tritonserver, real ``fleet worker`` processes.

Given two workers serving the session's stack, these tests drive the client the way a user does: the CLI
for bulk submit → wait and manifest re-submits, the Python API for per-client result isolation, the
GCS-backed waiter and dead-letter replay.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import pubsub_v1

from worker.client import sdk
from worker.dev.drawings import render_drawing

from .local_stack import fleet, run_id, serving_workers

pytestmark = pytest.mark.integration

WORKERS = 2
DISTINCT_INPUTS = 4  # 1,000 jobs reuse a few small uploaded drawings: the test measures the queue path
DRAWING_SIZE = (320, 226)
BULK_JOBS = 1000
BULK_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def workers(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[subprocess.Popen[bytes]]]:
    with serving_workers(stack, tmp_path_factory.mktemp("client-workers"), WORKERS) as processes:
        yield processes


@pytest.fixture(scope="module")
def drawings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("drawings")
    for index in range(DISTINCT_INPUTS):
        data, _label = render_drawing(index, size=DRAWING_SIZE)
        (folder / f"d{index}.png").write_bytes(data)
    return folder


def write_manifest(path: Path, job_ids: list[str], drawings: Path) -> Path:
    lines = [
        json.dumps({"job_id": job_id, "input": str(drawings / f"d{i % DISTINCT_INPUTS}.png")})
        for i, job_id in enumerate(job_ids)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.timeout(BULK_TIMEOUT_S + 120)
def test_cli_submits_and_waits_for_a_thousand_jobs(
    workers: list[subprocess.Popen[bytes]], drawings: Path, tmp_path: Path
) -> None:
    # Given a manifest of 1,000 jobs over a few small drawings
    job_ids = [f"bulk-{run_id()}-{i:04d}" for i in range(BULK_JOBS)]
    manifest = write_manifest(tmp_path / "bulk.jsonl", job_ids, drawings)

    # When the CLI submits it and waits
    started = time.monotonic()
    done = fleet(
        "submit",
        "--wait",
        "--json",
        "--timeout",
        str(BULK_TIMEOUT_S),
        str(manifest),
        timeout_s=BULK_TIMEOUT_S + 60,
    )
    elapsed_s = time.monotonic() - started

    # Then every job succeeded, each was published once, and the inputs were uploaded once
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    report = json.loads(done.stdout)
    assert report["summary"] == {"succeeded": BULK_JOBS}
    assert sorted(report["published"]) == sorted(job_ids)
    assert report["uploads"]["uploaded"] + report["uploads"]["reused"] == DISTINCT_INPUTS
    print(
        f"\n[client] fleet submit --wait: {BULK_JOBS} jobs, {WORKERS} workers: {elapsed_s:.1f} s "
        f"({BULK_JOBS / elapsed_s:.1f} jobs/s)"
    )


def test_two_clients_each_see_only_their_own_results(
    stack: Any, workers: list[subprocess.Popen[bytes]], drawings: Path
) -> None:
    # Given two clients, each with its own filtered results subscription
    settings = sdk.ClientSettings.from_env()
    with sdk.FleetClient(settings) as first, sdk.FleetClient(settings) as second:
        tag = run_id()
        mine = {
            client.client_id: [
                sdk.JobRequest(f"iso-{tag}-{n}-{i}", str(drawings / f"d{i % DISTINCT_INPUTS}.png"))
                for i in range(6)
            ]
            for n, client in enumerate((first, second))
        }
        # When both submit
        for client in (first, second):
            client.submit(mine[client.client_id])

        # Then each client's notifications are exactly its own jobs
        for client in (first, second):
            expected = {r.job_id for r in mine[client.client_id]}
            seen: set[str] = set()
            for outcome in client.results(idle_timeout_s=30, timeout_s=120):
                seen.add(outcome.job_id)
                assert outcome.job_id in expected, f"{client.client_id} saw a foreign job {outcome.job_id}"
                if seen == expected:
                    break
            assert seen == expected
    # and ephemeral subscriptions are deleted on exit
    subscriptions = {
        s.name.rsplit("/", 1)[1]
        for s in pubsub_v1.SubscriberClient().list_subscriptions(
            request={"project": f"projects/{settings.project}"}
        )
    }
    assert first.subscription_id not in subscriptions and second.subscription_id not in subscriptions


def test_resubmitting_a_manifest_reports_existing_results_and_runs_only_new_jobs(
    workers: list[subprocess.Popen[bytes]], drawings: Path, tmp_path: Path, storage_client: Any
) -> None:
    # Given a manifest whose jobs all succeeded
    tag = run_id()
    first_ids = [f"again-{tag}-{i}" for i in range(5)]
    manifest = write_manifest(tmp_path / "jobs.jsonl", first_ids, drawings)
    first = fleet("submit", "--wait", "--json", "--timeout", "120", str(manifest))
    assert first.returncode == 0, first.stderr[-2000:]
    settings = sdk.ClientSettings.from_env()
    bucket = storage_client.bucket(settings.results_bucket)
    generations = {j: bucket.get_blob(settings.result_object(j)).generation for j in first_ids}

    # When the same manifest, plus two new lines, is submitted again
    new_ids = [f"again-{tag}-new-{i}" for i in range(2)]
    write_manifest(manifest, first_ids + new_ids, drawings)
    again = fleet("submit", "--wait", "--json", "--timeout", "120", str(manifest))

    # Then only the new jobs are published, the old ones are reported from their result objects
    assert again.returncode == 0, again.stderr[-2000:]
    report = json.loads(again.stdout)
    assert sorted(report["already_answered"]) == sorted(first_ids)
    assert sorted(report["published"]) == sorted(new_ids)
    assert report["summary"] == {"succeeded": 7}
    assert report["uploads"]["uploaded"] == 0  # inputs are content-addressed: nothing uploaded twice
    assert {j: bucket.get_blob(settings.result_object(j)).generation for j in first_ids} == generations


def test_wait_returns_jobs_answered_before_the_waiter_subscribed(
    workers: list[subprocess.Popen[bytes]], drawings: Path
) -> None:
    # Given jobs submitted by a client that went away before reading a single notification
    settings = sdk.ClientSettings.from_env()
    tag = run_id()
    requests = [sdk.JobRequest(f"early-{tag}-{i}", str(drawings / "d0.png")) for i in range(3)]
    with sdk.FleetClient(settings) as submitter:
        job_ids = submitter.submit(requests).job_ids
    time.sleep(1.0)

    # When another client waits for them (its subscription never saw their notifications)
    with sdk.FleetClient(settings) as waiter:
        started = time.monotonic()
        outcomes = waiter.wait(job_ids, timeout_s=120)

    # Then the waiter reads their result objects instead of hanging
    assert {o.status for o in outcomes.values()} == {"succeeded"}
    assert time.monotonic() - started < 60


def test_a_reused_job_id_is_answered_job_id_conflict_never_with_another_clients_result(
    workers: list[subprocess.Popen[bytes]], drawings: Path, tmp_path: Path, storage_client: Any
) -> None:
    # Given client A's job shared-<tag> answered for drawing d0
    settings = sdk.ClientSettings.from_env()
    job_id = f"shared-{run_id()}"
    with sdk.FleetClient(settings) as client_a:
        first = client_a.wait(
            client_a.submit([sdk.JobRequest(job_id, str(drawings / "d0.png"))]).job_ids, 120
        )
    assert first[job_id].succeeded
    blob = storage_client.bucket(settings.results_bucket).get_blob(settings.result_object(job_id))
    a_generation, a_bytes = blob.generation, blob.download_as_bytes()

    # When client B (its own settings and client) submits the same job_id for drawing d1
    settings_b = sdk.ClientSettings.from_env()
    with sdk.FleetClient(settings_b) as client_b:
        receipt = client_b.submit([sdk.JobRequest(job_id, str(drawings / "d1.png"))])
        outcome = client_b.wait(receipt.job_ids, timeout_s=120)[job_id]

    # Then B's job was published (A's result is not B's answer) and B is answered JOB_ID_CONFLICT
    assert receipt.already_answered == {} and receipt.published == (job_id,)
    assert (outcome.status, outcome.error_code) == ("failed", "JOB_ID_CONFLICT"), outcome
    assert outcome.result_uri is not None and "/_rejected/" in outcome.result_uri
    # at an object of B's own, with B's input and nothing of A's
    own = json.loads(
        storage_client.bucket(settings.results_bucket)
        .blob(outcome.result_uri.split("/", 3)[3])
        .download_as_bytes()
    )
    assert own["outputs"] is None and own["input_uri"] != json.loads(a_bytes)["input_uri"]
    # and A's result object is unchanged
    again = storage_client.bucket(settings.results_bucket).get_blob(settings.result_object(job_id))
    assert (again.generation, again.download_as_bytes()) == (a_generation, a_bytes)

    # and the CLI says so: exit 1, the job named, what to do; --json carries the code
    manifest = tmp_path / "reuse.jsonl"
    manifest.write_text(json.dumps({"job_id": job_id, "input": str(drawings / "d2.png")}) + "\n")
    text = fleet("submit", "--wait", "--timeout", "120", str(manifest))
    assert text.returncode == 1, text.stderr[-2000:]
    assert f"{job_id}: failed [JOB_ID_CONFLICT]" in text.stdout
    assert f"{job_id} was not run" in text.stdout and "--namespace" in text.stdout
    as_json = fleet("submit", "--wait", "--json", "--timeout", "120", str(manifest))
    assert as_json.returncode == 1
    assert [j["error"]["code"] for j in json.loads(as_json.stdout)["jobs"]] == ["JOB_ID_CONFLICT"]


def test_two_clients_reusing_a_job_id_in_their_own_namespaces_both_get_their_own_results(
    workers: list[subprocess.Popen[bytes]], drawings: Path, tmp_path: Path, storage_client: Any
) -> None:
    # Given two namespaces and one job_id
    tag = run_id()
    job_id = f"order-{tag}-sheet-1"
    base = sdk.ClientSettings.from_env()
    settings_a = dataclasses.replace(base, namespace=f"team-a-{tag}")
    namespace_b = f"team-b-{tag}"

    # When client A submits it through the SDK for d0 and client B through the CLI for d1
    with sdk.FleetClient(settings_a) as client_a:
        outcome_a = client_a.wait(
            client_a.submit([sdk.JobRequest(job_id, str(drawings / "d0.png"))]).job_ids, 120
        )
    manifest = tmp_path / "b.jsonl"
    manifest.write_text(json.dumps({"job_id": job_id, "input": str(drawings / "d1.png")}) + "\n")
    submitted_b = fleet(
        "submit", "--wait", "--json", "--timeout", "120", "--namespace", namespace_b, str(manifest)
    )

    # Then both succeed, each with its own result object in its own namespace
    assert outcome_a[job_id].succeeded, outcome_a
    assert outcome_a[job_id].result_uri == settings_a.result_uri(job_id)
    assert submitted_b.returncode == 0, submitted_b.stderr[-2000:] + submitted_b.stdout[-2000:]
    (job_b,) = json.loads(submitted_b.stdout)["jobs"]
    settings_b = dataclasses.replace(base, namespace=namespace_b)
    assert (job_b["status"], job_b["result_uri"]) == ("succeeded", settings_b.result_uri(job_id))
    bucket = storage_client.bucket(base.results_bucket)
    doc_a = json.loads(bucket.blob(settings_a.result_object(job_id)).download_as_bytes())
    doc_b = json.loads(bucket.blob(settings_b.result_object(job_id)).download_as_bytes())
    assert (doc_a["namespace"], doc_b["namespace"]) == (settings_a.namespace, namespace_b)
    assert doc_a["input_uri"] != doc_b["input_uri"]
    assert bucket.get_blob(base.result_object(job_id)) is None  # nothing at the un-namespaced path
    # and fleet status reads each namespace's own result
    status_b = fleet("status", job_id, "--json", "--namespace", namespace_b)
    assert status_b.returncode == 0 and json.loads(status_b.stdout)["result_uri"] == job_b["result_uri"]
    assert fleet("status", job_id).returncode == 1  # pending: no result outside the namespaces


def test_cli_status_and_results(workers: list[subprocess.Popen[bytes]], drawings: Path) -> None:
    client_id = f"cli-test-{run_id()}"
    submitted = fleet("submit", "--json", "--client-id", client_id, str(drawings / "d1.png"))
    assert submitted.returncode == 0, submitted.stderr
    (job_id,) = json.loads(submitted.stdout)["published"]

    results = fleet("results", "--json", "--client-id", client_id, "--idle", "60", "--limit", "1")
    assert results.returncode == 0, results.stderr
    assert [json.loads(line)["job_id"] for line in results.stdout.splitlines()] == [job_id]

    status = fleet("status", job_id, "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["status"] == "succeeded"
    assert fleet("status", "never-submitted-" + run_id()).returncode == 1


def test_dead_letters_are_listed_and_replayed_under_a_new_job_id(
    stack: Any, workers: list[subprocess.Popen[bytes]], drawings: Path, publisher: Any
) -> None:
    # Given a dead-lettered job held on the hold subscription
    settings = sdk.ClientSettings.from_env()
    with sdk.FleetClient(settings) as owner:
        (request,) = [sdk.JobRequest(f"dead-{run_id()}", str(drawings / "d2.png"))]
        prepared = sdk.prepare_jobs([request], settings=settings, client_id=owner.client_id)
        owner.uploader.upload(prepared)
        dead_letter_topic = os.environ.get("FLEET_DEAD_LETTER_TOPIC", "fleet-dead-letter")
        publisher.publish(
            f"projects/{settings.project}/topics/{dead_letter_topic}",
            prepared[0].data,
            **prepared[0].attributes,
            CloudPubSubDeadLetterSourceDeliveryCount="5",
        ).result(timeout=30)

        # When it is listed, then replayed
        listed = fleet("dlq", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert request.job_id in {letter["job_id"] for letter in json.loads(listed.stdout)}
        replayed = fleet("dlq", "replay", request.job_id, "--json")

        # Then it runs again as <job_id>.replay-1 and its owner gets the answer
        assert replayed.returncode == 0, replayed.stderr
        (replay,) = json.loads(replayed.stdout)["replayed"]
        assert replay["job_id"] == f"{request.job_id}.replay-1"
        outcome = owner.wait([replay["job_id"]], timeout_s=120)[replay["job_id"]]
        assert outcome.status == "succeeded"
    assert request.job_id not in {
        letter["job_id"] for letter in json.loads(fleet("dlq", "list", "--json").stdout)
    }
