"""Pure parts of the harness (worker/dev/harness/): the audit that decides lost/overwritten, the percentiles
and env-file parser it reports and reads with (worker/shared), the fake metadata server and the hostile-input
recipes."""

from __future__ import annotations

import io
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

from PIL import Image

from worker.dev import harness
from worker.shared import environment, stats


def note(key: str, status: str = "succeeded", code: str | None = None) -> harness.Notification:
    error = {"code": code, "message": "m"} if code else None
    return harness.Notification({"status": status, "error": error}, {harness.KEY_ATTRIBUTE: key}, key, 0.0)


def test_audit_counts_lost_duplicates_and_overwrites() -> None:
    expected = {k: f"results/{k}.json" for k in ("a", "b", "c", "d")}
    notes = {"a": [note("a"), note("a")], "b": [note("b", "failed", "INPUT_NOT_FOUND")], "c": [note("c")]}
    objects = {f"results/{k}.json": SimpleNamespace(metageneration=1) for k in ("a", "b", "d")}
    writes = {"results/a.json": 2, "results/b.json": 1, "results/d.json": 1}
    audit = harness.audit_jobs(expected, notes, objects, writes_by_object=writes)
    assert (audit.succeeded, audit.failed, audit.lost) == (1, 1, 2)  # c: no object, d: no notification
    assert audit.missing_objects == ["c"]
    assert audit.missing_notifications == ["d"]
    assert audit.duplicate_notifications == 1
    assert audit.overwritten == 1
    assert audit.error_codes == {"INPUT_NOT_FOUND": 1}
    assert audit.job_id_conflicts == 0


def test_audit_counts_jobs_answered_job_id_conflict() -> None:
    expected = {k: f"results/{k}.json" for k in ("a", "b")}
    notes = {"a": [note("a", "failed", "JOB_ID_CONFLICT")], "b": [note("b")]}
    objects = {f"results/{k}.json": SimpleNamespace(metageneration=1) for k in ("a", "b")}
    audit = harness.audit_jobs(expected, notes, objects, writes_by_object={})
    assert audit.job_id_conflicts == 1 and audit.error_codes == {"JOB_ID_CONFLICT": 1}


def test_percentiles_nearest_rank() -> None:
    assert stats.percentiles(list(range(1, 101))) == {"p50": 50, "p95": 95, "p99": 99}
    assert stats.percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0}


def test_fake_metadata_server_hangs_until_the_flag_flips() -> None:
    server = harness.FakeMetadataServer().start()
    try:
        url = server.url_for("vm-1") + "/instance/preempted"

        def get(query: str = "") -> tuple[str, str]:
            request = urllib.request.Request(url + query, headers={"Metadata-Flavor": "Google"})
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.read().decode(), response.headers["ETag"]

        value, etag = get()
        assert value == "FALSE"
        threading.Timer(0.3, server.set_preempted, args=("vm-1", True)).start()
        started = time.monotonic()
        value, _ = get(f"?wait_for_change=true&timeout_sec=5&last_etag={etag}")
        assert value == "TRUE"
        assert 0.2 < time.monotonic() - started < 4
        assert get()[0] == "TRUE"
        assert server.url_for("vm-2") != server.url_for("vm-1")
    finally:
        server.close()


def test_env_file_parser(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text("# comment\nexport A=1\nexport B='x y'\n\nC=3\n")
    assert environment.read_env_file(path) == {"A": "1", "B": "x y", "C": "3"}


def test_bomb_recipes_claim_what_they_say() -> None:
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # only reading headers here
    try:
        assert Image.open(io.BytesIO(harness.png_bomb(20000))).size == (20000, 20000)
        assert Image.open(io.BytesIO(harness.png_header_only(10**6))).size == (10**6, 10**6)
        assert Image.open(io.BytesIO(harness.jpeg_header_claiming(65000))).size == (65000, 65000)
        assert Image.open(io.BytesIO(harness.gif_header_claiming(65535))).size == (65535, 65535)
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    assert len(harness.png_bomb(20000)) < 100_000
