"""GCS through the official google-cloud-storage client: write-once preconditions and fault injection."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import pytest
from google.api_core import exceptions

from worker.dev.devstack.gcs_emulator import check_preconditions

pytestmark = pytest.mark.integration


def _name(prefix: str = "results/") -> str:
    return f"{prefix}{uuid.uuid4().hex}.json"


def test_second_write_once_upload_gets_412(stack: Any, storage_client: Any) -> None:
    bucket = storage_client.bucket(stack.env["FLEET_RESULTS_BUCKET"])
    name = _name()
    bucket.blob(name).upload_from_string(b'{"n": 1}', content_type="application/json", if_generation_match=0)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob(name).upload_from_string(
            b'{"n": 2}', content_type="application/json", if_generation_match=0
        )
    assert bucket.blob(name).download_as_bytes() == b'{"n": 1}'


def test_resumable_upload_honours_preconditions(stack: Any, storage_client: Any) -> None:
    bucket = storage_client.bucket(stack.env["FLEET_RESULTS_BUCKET"])
    name = _name("big/")
    payload = os.urandom(300 * 1024)
    bucket.blob(name, chunk_size=256 * 1024).upload_from_string(payload, if_generation_match=0)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob(name, chunk_size=256 * 1024).upload_from_string(b"y" * 300 * 1024, if_generation_match=0)
    assert bucket.blob(name).download_as_bytes() == payload


def test_generation_match_and_not_match_on_writes_and_reads(stack: Any, storage_client: Any) -> None:
    bucket = storage_client.bucket(stack.env["FLEET_INPUT_BUCKET"])
    name = _name("inputs/")
    bucket.blob(name).upload_from_string(b"v1", if_generation_match=0)
    generation = bucket.get_blob(name).generation
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob(name).download_as_bytes(if_generation_match=generation + 1)
    assert bucket.blob(name).download_as_bytes(if_generation_match=generation) == b"v1"
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob(name).upload_from_string(b"v2", if_generation_not_match=generation)
    bucket.blob(name).upload_from_string(b"v2", if_generation_match=generation)  # compare-and-swap wins
    assert bucket.blob(name).download_as_bytes() == b"v2"
    with pytest.raises(exceptions.NotFound):
        bucket.blob(_name("missing/")).download_as_bytes(if_generation_match=1)


def test_fault_503s_and_latency(stack: Any, storage_client: Any, gcs_faults: Any) -> None:
    bucket = storage_client.bucket(stack.env["FLEET_RESULTS_BUCKET"])
    gcs_faults.set_faults(error_rate=1.0)
    with pytest.raises(exceptions.ServiceUnavailable):
        bucket.blob(_name()).upload_from_string(b"x", if_generation_match=0, retry=None)
    assert gcs_faults.stats()["injected_503"] >= 1
    gcs_faults.set_faults(error_rate=0.0, latency_ms=300)
    started = time.monotonic()
    bucket.blob(_name()).upload_from_string(b"x", if_generation_match=0)
    assert time.monotonic() - started >= 0.3


def test_check_preconditions_pure() -> None:
    live = {"generation": "7", "metageneration": "2"}
    assert check_preconditions(None, {"ifGenerationMatch": ["0"]}) is None
    assert check_preconditions(live, {"ifGenerationMatch": ["0"]}) is not None
    assert check_preconditions(live, {"ifGenerationMatch": ["7"]}) is None
    assert check_preconditions(live, {"ifGenerationNotMatch": ["7"]}) is not None
    assert check_preconditions(live, {"ifMetagenerationMatch": ["2"]}) is None
    assert check_preconditions(live, {"ifMetagenerationNotMatch": ["2"]}) is not None
    assert check_preconditions(None, {"ifMetagenerationMatch": ["1"]}) is not None
