"""Security properties of the worker (docs/security.md), tested from the outside.

- Reads only from the allowed input buckets: jobs naming another existing bucket (a "secrets" bucket, the
  results bucket) are refused with INPUT_NOT_ALLOWED and the object is never read.
- Writes only under the results prefix of the results bucket, whatever the job id says.
- Nothing credential-like reaches the logs: a token planted in params, attributes and in a malformed body
  never appears in the worker's output, even at DEBUG.
- Size limits are enforced before allocation: decompression bombs and oversized messages are refused
  without the memory a decode/parse would take.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from worker.dev import harness
from worker.shared import contracts, errors

PLANTED_TOKEN = "ya29.PLANTED-" + "S3cr3tT0k3n" * 3
#: A decoded 40000 x 40000 bomb would need 1.6 GB; refusing it from the header must cost (almost) nothing.
MAX_RSS_GROWTH_MB = 64


# --- size limits, no stack needed --------------------------------------------------------------------
_RSS_PROBE = r"""
import resource, sys
from worker.dev import harness
from worker.runtime.documents import images
from worker.shared.errors import ImageTooLarge, InputTooLarge
bombs = [harness.png_bomb(40000), harness.png_header_only(1_000_000),
         harness.jpeg_header_claiming(65000), harness.gif_header_claiming(65535)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
codes = []
for data in bombs:
    try:
        images.decode_input(data, size_px=192)
        codes.append("accepted")
    except (ImageTooLarge, InputTooLarge) as exc:
        codes.append(exc.code)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(" ".join(codes), (after - before) // 1024)
"""


def test_image_bombs_are_refused_before_decoding() -> None:
    """Given four bombs (valid 40k² PNG, 10^6² header, 65k² JPEG and GIF); peak RSS barely moves."""
    out = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    codes, growth_mb = out.stdout.rsplit(" ", 1)
    assert codes.split() == ["IMAGE_TOO_LARGE"] * 4
    assert int(growth_mb) < MAX_RSS_GROWTH_MB


def test_message_size_is_checked_before_parsing() -> None:
    """A 1 MB parser bomb is refused by its size, never handed to the JSON parser."""
    delivery = contracts.Delivery(
        ack_id="a",
        subscription="s",
        message_id="1",
        data=b"[" * (1024 * 1024),
        attributes={},
        publish_time=0.0,
        delivery_attempt=1,
        leased_at=0.0,
    )
    outcome = contracts.parse_job(delivery, allowed_buckets=frozenset({"b"}))
    assert isinstance(outcome, contracts.Rejection)
    assert isinstance(outcome.error, errors.MessageTooLarge)


# --- the real worker on the local stack --------------------------------------------------------------
@pytest.fixture(scope="module")
def security_run(
    harness_env: harness.StackEnv, harness_storage: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    env = harness_env
    storage_client = harness_storage
    run_id = "sec" + harness.new_run_id()
    topology = harness.RunTopology.named(run_id)
    topology.create(env)
    run_env = harness.stack_for_run(env, topology)
    workdir = tmp_path_factory.mktemp("security")
    drawing = harness.drawing_png()
    good_uri = harness.upload(
        storage_client, env.input_bucket, f"sec/{run_id}/drawing.png", drawing, "image/png"
    )
    secrets_bucket = f"{env.project}-fleet-secrets-{run_id}"
    storage_client.create_bucket(secrets_bucket)
    secret_uri = harness.upload(storage_client, secrets_bucket, "drawing.png", drawing, "image/png")
    victim = f"{run_id}-victim"
    messages = [
        harness.job_message(
            "token-ok",
            job_id=f"{run_id}-token-ok",
            input_uri=good_uri,
            run_id=run_id,
            params={"api_key": PLANTED_TOKEN, "nested": {"password": PLANTED_TOKEN}},
            attributes={"authorization": f"Bearer {PLANTED_TOKEN}"},
        ),
        harness.job_message(
            "token-failed",
            job_id=f"{run_id}-token-failed",
            input_uri=good_uri,
            run_id=run_id,
            analyses=["segment"],
            params={"token": PLANTED_TOKEN},
            attributes={"x-api-key": PLANTED_TOKEN},
        ),
        harness.Message(
            "token-malformed",
            ('{"job_id": "x", "params": {"secret": "' + PLANTED_TOKEN + '"').encode(),
            {"priority": "batch", harness.RUN_ATTRIBUTE: run_id, harness.KEY_ATTRIBUTE: "token-malformed"},
        ),
        harness.job_message("victim", job_id=victim, input_uri=good_uri, run_id=run_id),
        harness.job_message("secrets-bucket", job_id=f"{run_id}-sb", input_uri=secret_uri, run_id=run_id),
        harness.job_message(
            "results-bucket",
            job_id=f"{run_id}-rb",
            input_uri=f"gs://{env.results_bucket}/results/{victim}.json",
            run_id=run_id,
        ),
    ]
    for key, job_id in [
        ("traversal", f"../{run_id}-escaped"),
        ("traversal-input", f"../../{env.input_bucket}/{run_id}"),
        ("overwrite-victim", f"./{victim}"),
    ]:
        body = json.dumps({"job_id": job_id, "input_uri": good_uri}).encode()
        attrs = {"priority": "batch", harness.RUN_ATTRIBUTE: run_id, harness.KEY_ATTRIBUTE: key}
        messages.append(harness.Message(key, body, attrs))
    worker = harness.worker_slot(
        "security-worker",
        run_env,
        workdir,
        extra_env={"FLEET_LOG_LEVEL": "DEBUG", "FLEET_WATCH_METADATA": "false"},
    )
    worker.restart = False
    collector = harness.NotificationCollector(run_env, run_id=run_id).start()
    inputs_before = {b.name for b in storage_client.list_blobs(env.input_bucket, prefix=f"sec/{run_id}")}
    # The session stack's results bucket is shared with other tests (some write outside results/ on
    # purpose), so what counts is what appears there during this run.
    outside_results_before = _outside_results_prefix(storage_client, env.results_bucket)
    worker.start()
    try:
        publisher = harness.new_publisher()
        # The victim first, so the overwrite attempt finds its result in place.
        harness.publish_all(publisher, run_env.topic_path(topology.jobs_topic), messages[3:4])
        collector.wait_for(["victim"], timeout_s=90)
        published = harness.publish_all(
            publisher, run_env.topic_path(topology.jobs_topic), messages[:3] + messages[4:]
        )
        missing = collector.wait_for([m.key for m in messages], timeout_s=90)
        time.sleep(1.0)
        worker.poll()
        alive = worker.running
    finally:
        collector.close()
        worker.stop(timeout_s=30)
        topology.delete(env)
    yield {
        "env": env,
        "run_id": run_id,
        "victim": victim,
        "notes": collector.snapshot(),
        "missing": missing,
        "alive": alive,
        "log": worker.log_path.read_text(errors="replace"),
        "message_ids": {p.message.key: p.message_id for p in published},
        "inputs_before": inputs_before,
        "outside_results_before": outside_results_before,
        "inputs_after": {b.name for b in storage_client.list_blobs(env.input_bucket, prefix=f"sec/{run_id}")},
        "secrets_bucket": secrets_bucket,
    }


def _outside_results_prefix(storage_client: Any, bucket: str) -> set[str]:
    return {b.name for b in storage_client.list_blobs(bucket) if not b.name.startswith("results/")}


def _code(run: dict[str, Any], key: str) -> str | None:
    notes = run["notes"].get(key, [])
    assert notes, f"no notification for {key}; missing={run['missing']}"
    code: str | None = notes[0].error_code
    return code


@pytest.mark.integration
def test_every_security_job_is_answered(security_run: dict[str, Any]) -> None:
    assert security_run["alive"]
    assert not security_run["missing"]


@pytest.mark.integration
def test_reads_only_allowed_buckets(security_run: dict[str, Any]) -> None:
    assert _code(security_run, "secrets-bucket") == "INPUT_NOT_ALLOWED"
    assert _code(security_run, "results-bucket") == "INPUT_NOT_ALLOWED"
    assert _code(security_run, "victim") is None


@pytest.mark.integration
def test_writes_only_under_results_prefix(security_run: dict[str, Any], harness_storage: Any) -> None:
    storage_client = harness_storage
    env: harness.StackEnv = security_run["env"]
    run_id = security_run["run_id"]
    for key in ("traversal", "traversal-input", "overwrite-victim"):
        assert _code(security_run, key) == "INVALID_JOB_ID"
    # Nothing of this run outside results/, nothing new in the input bucket, the victim untouched.
    outside_now = _outside_results_prefix(storage_client, env.results_bucket)
    stray = outside_now - security_run["outside_results_before"]
    assert stray == set()
    assert security_run["inputs_after"] == security_run["inputs_before"]
    assert not [
        b for b in storage_client.list_blobs(security_run["secrets_bucket"]) if b.name != "drawing.png"
    ]
    victim = storage_client.bucket(env.results_bucket).get_blob(f"results/{security_run['victim']}.json")
    assert victim is not None
    assert json.loads(victim.download_as_bytes())["status"] == "succeeded"
    assert int(victim.metageneration or 1) == 1
    escaped = [b.name for b in storage_client.list_blobs(env.results_bucket) if f"{run_id}-escaped" in b.name]
    assert escaped == []


@pytest.mark.integration
def test_planted_token_never_reaches_logs(security_run: dict[str, Any]) -> None:
    assert _code(security_run, "token-ok") is None
    assert _code(security_run, "token-failed") == "UNKNOWN_ANALYSIS"
    assert _code(security_run, "token-malformed") == "MALFORMED_JOB"
    log: str = security_run["log"]
    assert log.strip(), "the worker logged nothing at DEBUG: the test would prove nothing"
    assert PLANTED_TOKEN not in log
    assert "S3cr3tT0k3n" not in log
