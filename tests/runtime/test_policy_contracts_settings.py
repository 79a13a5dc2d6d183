"""Pure rules: policy functions, the job/result/notification contract and its JSON Schemas, settings."""

from __future__ import annotations

import dataclasses
import io
import json
import random
from typing import Any

import jsonschema
import pytest

from worker.cli import main
from worker.models.drawing_analyzer import model_spec
from worker.runtime import policy, telemetry
from worker.runtime.settings import FIELDS, WorkerSettings
from worker.shared import contracts, errors
from worker.shared.contracts import Rejection, Timeline

from .worker_fakes import delivery

ALLOWED = frozenset({"inputs"})


def test_backoff_grows_and_caps() -> None:
    rng = random.Random(1)
    assert policy.backoff_s(1, base_s=0.2, cap_s=5, jitter=0) == 0.2
    assert policy.backoff_s(3, base_s=0.2, cap_s=5, jitter=0) == pytest.approx(0.8)
    assert policy.backoff_s(30, base_s=0.2, cap_s=5, jitter=0) == 5
    assert all(0.1 <= policy.backoff_s(1, base_s=0.2, jitter=0.5, rng=rng) <= 0.3 for _ in range(100))


def test_lease_extension_stops_at_max_processing() -> None:
    assert policy.lease_extension_s(held_s=0, max_processing_s=600, ack_deadline_s=60) == 60
    assert policy.lease_extension_s(held_s=590, max_processing_s=600, ack_deadline_s=60) == 20
    assert policy.lease_extension_s(held_s=700, max_processing_s=600, ack_deadline_s=60) == 0


def test_batch_due_when_full_or_its_oldest_item_waited_long_enough() -> None:
    assert not policy.batch_due(queued=0, oldest_age_ms=99, max_size=8, max_delay_ms=5)
    assert not policy.batch_due(queued=1, oldest_age_ms=1, max_size=8, max_delay_ms=5)
    assert policy.batch_due(queued=8, oldest_age_ms=0, max_size=8, max_delay_ms=5)
    assert policy.batch_due(queued=1, oldest_age_ms=6, max_size=8, max_delay_ms=5)


def test_load_hysteresis() -> None:
    state = policy.LoadState()
    state = policy.next_load_state(state, in_flight=10, slots=10)
    assert state.paused
    state = policy.next_load_state(state, in_flight=9, slots=10)
    assert state.paused, "stays paused until below 0.8"
    state = policy.next_load_state(state, in_flight=7, slots=10)
    assert not state.paused
    assert policy.pull_size(in_flight=7, slots=10) == 3


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("StatusCode.INVALID_ARGUMENT", errors.ModelRejected),
        ("UNAVAILABLE", errors.InferenceUnavailable),
        ("StatusCode.DEADLINE_EXCEEDED", errors.InferenceUnavailable),
        ("NOT_FOUND", errors.InferenceUnavailable),
    ],
)
def test_inference_status_classification(code: str, kind: type) -> None:
    assert isinstance(policy.classify_inference_status(code, "x"), kind)


def test_http_classification() -> None:
    assert policy.is_transient_http(503) and policy.is_transient_http(429)
    assert not policy.is_transient_http(404) and not policy.is_transient_http(412)


def parse(body: Any, **kw: Any) -> contracts.Job | Rejection:
    return contracts.parse_job(delivery(body, **kw), allowed_buckets=ALLOWED)


def test_valid_job_parses_with_defaults() -> None:
    job = parse({"job_id": "a-1", "input_uri": "gs://inputs/x/y.png"})
    assert isinstance(job, contracts.Job)
    assert job.priority == "batch" and job.analyses == ("classify", "embed") and job.input_object == "x/y.png"
    jsonschema.validate({"job_id": "a-1", "input_uri": "gs://inputs/x/y.png"}, contracts.load_schema("job"))


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"\xff\xfe", "MALFORMED_JOB"),
        (b"[1]", "MALFORMED_JOB"),
        (b"x" * (70 * 1024), "MESSAGE_TOO_LARGE"),
        ({"input_uri": "gs://inputs/a"}, "SCHEMA_INVALID"),
        ({"job_id": "a/b", "input_uri": "gs://inputs/a"}, "INVALID_JOB_ID"),
        ({"job_id": "..", "input_uri": "gs://inputs/a"}, "INVALID_JOB_ID"),
        ({"job_id": "a\u0430", "input_uri": "gs://inputs/a"}, "INVALID_JOB_ID"),
        ({"job_id": "a", "input_uri": "http://x/a"}, "INPUT_URI_INVALID"),
        ({"job_id": "a", "input_uri": "gs://other/a"}, "INPUT_NOT_ALLOWED"),
        ({"job_id": "a", "input_uri": "gs://inputs/a", "schema_version": 3}, "UNSUPPORTED_SCHEMA_VERSION"),
        ({"job_id": "a", "input_uri": "gs://inputs/a", "analyses": ["x"]}, "UNKNOWN_ANALYSIS"),
        ({"job_id": "a", "input_uri": "gs://inputs/a", "priority": "now"}, "UNKNOWN_PRIORITY"),
        ({"job_id": "a", "input_uri": "gs://inputs/a", "deadline": "tomorrow"}, "SCHEMA_INVALID"),
        ({"job_id": "a", "input_uri": "gs://inputs/a", "params": []}, "SCHEMA_INVALID"),
        ({"job_id": "a", "input_uri": "gs://inputs/a", "extra": 1}, "SCHEMA_INVALID"),
    ],
)
def test_invalid_jobs_map_to_stable_codes(body: Any, code: str) -> None:
    result = parse(body)
    assert isinstance(result, Rejection)
    assert result.error.code == code
    assert isinstance(result.error, errors.PermanentError)


def test_rejection_salvages_job_id_for_the_result_path() -> None:
    result = parse({"job_id": "keep", "input_uri": "gs://other/a"})
    assert isinstance(result, Rejection) and result.job_id == "keep"
    assert contracts.result_object_name("results/", None, "m/../1") == "results/_rejected/m..1.json"


def test_result_and_notification_match_their_schemas() -> None:
    timeline = Timeline(
        published=1.7e9, leased=1.7e9 + 1, started=1.7e9 + 1, finished=1.7e9 + 2, inference_ms=3
    )
    ok = contracts.build_result(
        job_id="a",
        input_uri="gs://inputs/a",
        error=None,
        model={"name": "m", "version": "1"},
        timeline=timeline,
        outputs={"classify": {"label": "gear", "scores": {"gear": 1.0}}, "embed": {"embedding": [0.0] * 128}},
        instance="vm",
        pid=1,
        delivery_attempt=1,
    )
    failed = contracts.build_result(
        job_id=None,
        input_uri=None,
        outputs={"x": 1},
        error=errors.InputNotFound("no"),
        model={"name": "m", "version": "1"},
        timeline=timeline,
        instance="vm",
        pid=1,
        delivery_attempt=2,
    )
    schema = contracts.load_schema("result")
    jsonschema.validate(ok, schema)
    jsonschema.validate(failed, schema)
    assert failed["outputs"] is None and failed["status"] == "failed"
    note = contracts.build_notification(
        job_id="a",
        status="failed",
        result_uri="gs://r/results/a.json",
        error={"code": "X_Y", "message": "m"},
        priority="batch",
        client_attributes={"tenant": "t", "status": "spoofed"},
    )
    jsonschema.validate(json.loads(note.data), contracts.load_schema("notification"))
    assert note.attributes == {
        "tenant": "t",
        "job_id": "a",
        "status": "failed",
        "priority": "batch",
        "error_code": "X_Y",
    }


def test_contract_analyses_match_the_model() -> None:
    assert contracts.DEFAULT_ANALYSES == model_spec.ANALYSES


def test_settings_from_env_and_defaults() -> None:
    s = WorkerSettings.from_env(
        {
            "GOOGLE_CLOUD_PROJECT": "p",
            "FLEET_PIPELINE_SLOTS": "4",
            "FLEET_ALLOWED_INPUT_BUCKETS": "a, b",
            "FLEET_METRICS_EXPORT": "true",
        }
    )
    assert s.pipeline_slots == 4 and s.allowed_buckets == frozenset({"a", "b"}) and s.metrics_export
    assert s.results_bucket == "p-fleet-results"
    assert WorkerSettings().drain_budget_s == 20.0
    with pytest.raises(ValueError, match="FLEET_PIPELINE_SLOTS"):
        WorkerSettings.from_env({"FLEET_PIPELINE_SLOTS": "many"})
    with pytest.raises(ValueError, match="pipeline_slots"):
        WorkerSettings(pipeline_slots=0)


def test_each_setting_is_declared_once_and_its_variable_derived() -> None:
    # Every variable is FLEET_ + the field's name but the two shared with the Google clients and the stack
    overridden = {o.field: o.env for o in FIELDS if o.env != "FLEET_" + o.field.upper()}
    assert overridden == {"project": "GOOGLE_CLOUD_PROJECT", "triton_grpc_url": "TRITON_GRPC_URL"}
    assert [o.field for o in FIELDS] == [f.name for f in dataclasses.fields(WorkerSettings)]
    assert all(o.help for o in FIELDS)
    # and a value the environment gives is parsed by the field's type, flags winning
    parsed = WorkerSettings.from_env(
        {"FLEET_WATCH_METADATA": "off", "FLEET_MAX_BATCH_DELAY_MS": "2.5"}, max_batch_delay_ms=1.0
    )
    assert parsed.watch_metadata is False and parsed.max_batch_delay_ms == 1.0
    with pytest.raises(ValueError, match="FLEET_WATCH_METADATA='maybe' is not a valid bool"):
        WorkerSettings.from_env({"FLEET_WATCH_METADATA": "maybe"})


def test_every_option_is_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    text = capsys.readouterr().out
    for option in FIELDS:
        assert "--" + option.field.replace("_", "-") in text
        assert option.env in text
    assert "--one-at-a-time" in text and "default 20.0" in text


def test_logs_are_json_with_whitelisted_fields_only() -> None:
    stream = io.StringIO()
    telemetry.configure_logging("INFO", stream=stream)
    try:
        telemetry.get_logger("t").info(
            "job succeeded",
            job_id="a",
            params={"token": "s3cret"},
            attributes={"auth": "s3cret"},
            trace="projects/p/traces/abc",
        )
    finally:
        telemetry.configure_logging("INFO")
    line = json.loads(stream.getvalue())
    assert line["severity"] == "INFO" and line["message"] == "job succeeded" and line["job_id"] == "a"
    assert line["logging.googleapis.com/trace"] == "projects/p/traces/abc"
    assert "s3cret" not in stream.getvalue()
