"""The Ops Agent config against what the worker writes (worker/runtime/telemetry.py) and the alerts' inputs.

No YAML parser is a project dependency, so the test reads the few keys it checks with patterns, then
applies them as the Ops Agent documents them: `parse_json` with `time_key`/`time_format` (strptime(3);
``%L`` = fractional seconds) sets the entry's timestamp and drops the field, a value that does not parse
stays in the payload; `modify_fields` moves ``jsonPayload.severity`` to the entry's severity.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from structlog.processors import JSONRenderer

from worker.runtime import telemetry

from ._files import PACKER, TERRAFORM

CONFIG = PACKER / "files" / "ops-agent" / "config.yaml"
# google.logging.type.LogSeverity names.
LOG_SEVERITIES = {"DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"}


def _config_text() -> str:
    return CONFIG.read_text(encoding="utf-8")


def _processor(name: str) -> str:
    """The indented body of one logging processor."""
    match = re.search(rf"^    {name}:\n((?:      .*\n)+)", _config_text(), flags=re.MULTILINE)
    assert match, f"processor {name} not found"
    return match.group(1)


def _time_settings() -> tuple[str, str]:
    body = _processor("worker_json")
    assert re.search(r"^      type: parse_json$", body, flags=re.MULTILINE)
    key = re.search(r"^      time_key: (\S+)$", body, flags=re.MULTILINE)
    fmt = re.search(r'^      time_format: "(.+)"$', body, flags=re.MULTILINE)
    assert key and fmt, body
    return key.group(1), fmt.group(1)


def ops_agent_entry(line: str) -> dict[str, Any]:
    """The LogEntry fields the config produces from one worker line (timestamp None: the read time)."""
    time_key, time_format = _time_settings()
    payload: dict[str, Any] = json.loads(line)
    timestamp = None
    value = payload.get(time_key)
    if isinstance(value, str):
        try:
            timestamp = datetime.strptime(value, time_format.replace("%L", "%f"))
            del payload[time_key]
        except ValueError:
            pass
    return {"timestamp": timestamp, "severity": payload.pop("severity", "DEFAULT"), "jsonPayload": payload}


def _worker_line(method: str, **fields: Any) -> str:
    """One line exactly as the worker's logging chain renders it."""
    event = telemetry._cloud_logging_shape(None, method, {"event": "worker started", **fields})
    rendered = JSONRenderer()(None, method, event)
    return rendered if isinstance(rendered, str) else rendered.decode()


def test_pipeline_parses_json_then_moves_severity() -> None:
    text = _config_text()
    assert re.search(r"receivers: \[fleet_worker\]\n\s+processors: \[worker_json, worker_severity\]", text)
    severity = _processor("worker_severity")
    assert "type: modify_fields" in severity
    assert re.search(r"severity:\n\s+move_from: jsonPayload\.severity", severity)


def test_time_format_reads_rfc3339_utc_as_the_entry_timestamp() -> None:
    line = json.dumps({"severity": "INFO", "message": "m", "time": "2024-05-01T12:34:56.123456Z"})
    entry = ops_agent_entry(line)
    assert entry["timestamp"] == datetime(2024, 5, 1, 12, 34, 56, 123456, tzinfo=UTC)
    assert "time" not in entry["jsonPayload"]
    offset = ops_agent_entry(json.dumps({"time": "2024-05-01T21:34:56.5+0900"}))
    assert offset["timestamp"] == datetime(2024, 5, 1, 12, 34, 56, 500000, tzinfo=UTC)


def test_worker_severities_become_the_entry_severity() -> None:
    for method, expected in [
        ("debug", "DEBUG"),
        ("info", "INFO"),
        ("warning", "WARNING"),
        ("error", "ERROR"),
    ]:
        entry = ops_agent_entry(_worker_line(method, job_id="j1"))
        assert entry["severity"] == expected
        assert entry["severity"] in LOG_SEVERITIES
        assert entry["jsonPayload"]["message"] == "worker started"
        assert entry["jsonPayload"]["job_id"] == "j1"
    assert set(telemetry._SEVERITY.values()) <= LOG_SEVERITIES


def test_the_worker_time_field_becomes_the_entry_timestamp() -> None:
    """The worker writes RFC 3339 in UTC, which the documented time_format reads (not the read time)."""
    before = datetime.now(UTC)
    entry = ops_agent_entry(_worker_line("info"))
    after = datetime.now(UTC)
    assert "time" not in entry["jsonPayload"]
    assert entry["timestamp"] is not None and before - timedelta(seconds=1) <= entry["timestamp"] <= after
    assert telemetry.log_time(0.5) == "1970-01-01T00:00:00.500000Z"


def test_journal_receiver_feeds_the_crash_loop_metric() -> None:
    text = _config_text()
    assert re.search(r"^    fleet_units:\n      type: systemd_journald$", text, flags=re.MULTILINE)
    assert re.search(r"receivers: \[fleet_units\]\n\s+processors: \[only_fleet_units\]", text)
    only = _processor("only_fleet_units")
    assert "type: exclude_logs" in only and "worker|triton|fleet-" in only
    for unit in ("worker.service", "triton.service", "fleet-metadata.service", "fleet-dlq-handler.service"):
        assert re.search(r"^(worker|triton|fleet-[a-z-]+)\.service$", unit), unit
        assert (PACKER / "files" / "systemd" / unit).is_file(), unit
    monitoring = (TERRAFORM / "monitoring.tf").read_text(encoding="utf-8")
    assert 'log_id(\\"fleet_units\\")' in monitoring
