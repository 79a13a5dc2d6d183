"""Telemetry: JSON log lines Cloud Logging parses, in-process metrics, Cloud Monitoring export, CPU stats.

Logs: one JSON object per line with ``severity``, ``message``, ``time`` and whitelisted fields only
(``LOG_FIELDS``) -- job params and client attributes are never logged, so a credential a client puts in
a job cannot reach the logs. ``trace`` becomes Cloud Logging's ``logging.googleapis.com/trace``.

Metrics (custom.googleapis.com/inference_fleet/...): ``jobs_completed`` (by status), ``job_latency_ms``
(distribution), ``in_flight``, ``busy_fraction``, ``jobs_overdue`` (by stage: jobs the lease-age watchdog
found held in a stage past its budget, worker/runtime/pipeline/watchdog.py), and the per-group signal
``group/busy_slots`` written
on a ``generic_node`` resource whose namespace is the instance group, so an autoscaler metric policy with
``single_instance_assignment`` can scale the group (to zero) on it.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict

METRIC_PREFIX = "custom.googleapis.com/inference_fleet/"
# Only these keys ever reach a log line; anything else a caller passes is dropped.
LOG_FIELDS = frozenset(
    {
        "job_id",
        "message_id",
        "status",
        "error_code",
        "priority",
        "delivery_attempt",
        "latency_ms",
        "queue_wait_ms",
        "inference_ms",
        "batch_size",
        "instance",
        "pid",
        "subscription",
        "operation",
        "count",
        "seconds",
        "exit_code",
        "reason",
        "slots",
        "model",
        "version",
        "url",
        "stats",
        "duplicate",
        "held",
        "stage",
    }
)
_SEVERITY = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "warn": "WARNING",
    "error": "ERROR",
    "critical": "CRITICAL",
    "exception": "ERROR",
}
TRACE_KEY = "logging.googleapis.com/trace"


def log_time(now: float | None = None) -> str:
    """RFC 3339 in UTC with microseconds (``2024-05-01T12:34:56.123456Z``): the form the Ops Agent's
    ``parse_json`` ``time_format`` reads into the entry's timestamp (epoch seconds would keep read time)."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _cloud_logging_shape(_logger: Any, method: str, event: EventDict) -> EventDict:
    out: dict[str, Any] = {
        "severity": _SEVERITY.get(method, "DEFAULT"),
        "message": str(event.pop("event", "")),
        "time": log_time(),
        "logger": event.pop("logger_name", None) or event.pop("logger", None),
    }
    trace = event.pop("trace", None)
    if trace:
        out[TRACE_KEY] = trace
    for key, value in event.items():
        if key in LOG_FIELDS:
            out[key] = value
    return out


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Structlog to JSON lines on ``stream`` (stderr by default); call once at process start."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[_cloud_logging_shape, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(logger_name=name)


def trace_from_attributes(attributes: dict[str, str], project: str) -> str | None:
    """W3C ``traceparent`` attribute -> ``projects/P/traces/ID`` (Cloud Logging's trace field)."""
    parent = attributes.get("traceparent")
    if not parent:
        return None
    parts = parent.split("-")
    if len(parts) >= 3 and len(parts[1]) == 32 and all(c in "0123456789abcdef" for c in parts[1]):
        return f"projects/{project}/traces/{parts[1]}"
    return None


# --- metrics ----------------------------------------------------------------------------------------

LATENCY_BOUNDS_MS: tuple[float, ...] = (
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    300000,
)


@dataclass
class Metrics:
    """In-process counters; cheap to update on the hot path, read by the exporter and the stats line."""

    slots: int = 1
    completed: Counter[str] = field(default_factory=Counter)
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))
    latency_count: int = 0
    latency_sum_ms: float = 0.0
    latency_sum_sq: float = 0.0
    in_flight: int = 0
    #: Jobs held in a stage past its budget (the watchdog), by stage; cumulative.
    overdue: Counter[str] = field(default_factory=Counter)
    busy_since: float = field(default_factory=time.monotonic)
    _busy_area: float = 0.0
    _busy_mark: float = field(default_factory=time.monotonic)
    start_wall: float = field(default_factory=time.time)
    preprocess_cpu_s: float = 0.0
    preprocess_inline_cpu_s: float = 0.0
    # Main-process CPU spent before the pipeline started (imports, pool start, model wait): excluded
    # from the per-job figure so it measures steady-state work.
    startup_cpu_s: float = 0.0

    def mark_started(self) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.startup_cpu_s = usage.ru_utime + usage.ru_stime

    jobs: int = 0

    def job_done(self, status: str, latency_ms: float) -> None:
        self.completed[status] += 1
        self.jobs += 1
        index = 0
        for bound in LATENCY_BOUNDS_MS:
            if latency_ms < bound:
                break
            index += 1
        self.latency_buckets[index] += 1
        self.latency_count += 1
        self.latency_sum_ms += latency_ms
        self.latency_sum_sq += latency_ms * latency_ms

    def job_overdue(self, stage: str) -> None:
        self.overdue[stage] += 1

    def set_in_flight(self, value: int) -> None:
        now = time.monotonic()
        self._busy_area += (now - self._busy_mark) * min(1.0, self.in_flight / max(1, self.slots))
        self._busy_mark = now
        self.in_flight = value

    def take_busy_fraction(self) -> float:
        """Mean of in_flight/slots since the last call (time-weighted)."""
        now = time.monotonic()
        self.set_in_flight(self.in_flight)
        span = now - self.busy_since
        value = self._busy_area / span if span > 0 else 0.0
        self._busy_area = 0.0
        self.busy_since = now
        return min(1.0, value)


@dataclass
class ExportLabels:
    project: str
    instance: str
    group: str
    location: str = "global"


class MonitoringExporter:
    """Writes ``Metrics`` to Cloud Monitoring's MetricService every interval, on one background thread."""

    def __init__(self, metrics: Metrics, labels: ExportLabels, *, client: Any, interval_s: float) -> None:
        self._metrics = metrics
        self._labels = labels
        self._client = client
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("exporter already started")
        self._thread = threading.Thread(target=self._loop, name="metrics-export", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.export_once()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.export_once()

    def export_once(self) -> None:
        try:
            self._client.create_time_series(
                name=f"projects/{self._labels.project}", time_series=self.time_series()
            )
        except Exception as exc:  # export must never take the worker down
            get_logger("worker.runtime.telemetry").warning("metrics export failed", reason=type(exc).__name__)

    def time_series(self) -> list[Any]:
        """The current values as Cloud Monitoring ``TimeSeries`` (one point each)."""
        m = self._metrics
        series = _SeriesBuilder(self._labels, start_wall=m.start_wall)
        out = [
            series(
                "jobs_completed", "CUMULATIVE", {"int64_value": count}, {"status": status}, cumulative=True
            )
            for status, count in sorted(m.completed.items())
        ]
        out.append(series("job_latency_ms", "CUMULATIVE", _latency_distribution(m), cumulative=True))
        out.extend(
            series("jobs_overdue", "CUMULATIVE", {"int64_value": count}, {"stage": stage}, cumulative=True)
            for stage, count in sorted(m.overdue.items())
        )
        out.append(series("in_flight", "GAUGE", {"int64_value": m.in_flight}))
        busy = m.take_busy_fraction()
        out.append(series("busy_fraction", "GAUGE", {"double_value": busy}))
        out.append(series("group/busy_slots", "GAUGE", {"double_value": busy * m.slots}))
        return out


def _timestamp(seconds: float) -> dict[str, int]:
    return {"seconds": int(seconds), "nanos": int((seconds % 1) * 1e9)}


def _latency_distribution(m: Metrics) -> dict[str, Any]:
    mean = m.latency_sum_ms / m.latency_count if m.latency_count else 0.0
    return {
        "distribution_value": {
            "count": m.latency_count,
            "mean": mean,
            "sum_of_squared_deviation": max(0.0, m.latency_sum_sq - m.latency_count * mean * mean),
            "bucket_options": {"explicit_buckets": {"bounds": list(LATENCY_BOUNDS_MS)}},
            "bucket_counts": list(m.latency_buckets),
        }
    }


class _SeriesBuilder:
    """One ``TimeSeries`` per call, on this instance's ``generic_node`` resource, ending now."""

    def __init__(self, labels: ExportLabels, *, start_wall: float) -> None:
        from google.cloud import monitoring_v3  # noqa: PLC0415 - only exporting workers pay for it

        self._time_series = monitoring_v3.TimeSeries
        self._end = _timestamp(time.time())
        self._start = _timestamp(start_wall)
        self._resource = {
            "type": "generic_node",
            "labels": {
                "project_id": labels.project,
                "location": labels.location,
                "namespace": labels.group or "default",
                "node_id": labels.instance,
            },
        }

    def __call__(
        self,
        name: str,
        kind: str,
        value: dict[str, Any],
        labels: dict[str, str] | None = None,
        *,
        cumulative: bool = False,
    ) -> Any:
        interval = (
            {"end_time": self._end, "start_time": self._start} if cumulative else {"end_time": self._end}
        )
        return self._time_series(
            {
                "metric": {"type": METRIC_PREFIX + name, "labels": labels or {}},
                "resource": self._resource,
                "metric_kind": kind,
                "points": [{"interval": interval, "value": value}],
            }
        )


# --- CPU / memory accounting (the stats file the benchmark reads) ---------------------------------------


def process_stats(metrics: Metrics, *, started_monotonic: float) -> dict[str, Any]:
    """Main-process CPU (all its threads), preprocess-pool CPU (measured inside tasks), jobs, peak RSS."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Inline preprocessing (one-at-a-time mode) ran in this process: count it as preprocess, not "other".
    main_cpu_ms = (usage.ru_utime + usage.ru_stime - metrics.preprocess_inline_cpu_s) * 1000.0
    running_cpu_ms = main_cpu_ms - metrics.startup_cpu_s * 1000.0
    pre_ms = metrics.preprocess_cpu_s * 1000.0
    jobs = metrics.jobs
    return {
        "jobs": jobs,
        "completed": dict(metrics.completed),
        "wall_s": round(time.monotonic() - started_monotonic, 3),
        "main_cpu_ms": round(main_cpu_ms, 1),
        "startup_cpu_ms": round(metrics.startup_cpu_s * 1000.0, 1),
        "preprocess_cpu_ms": round(pre_ms, 1),
        "cpu_ms_per_job": {
            "preprocess": round(pre_ms / jobs, 3) if jobs else None,
            "other": round(running_cpu_ms / jobs, 3) if jobs else None,
        },
        "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1),
        "children_peak_rss_mb": round(children.ru_maxrss / 1024.0, 1),
    }


def timed_call(func: Any, data: Any) -> tuple[Any, float]:
    """Run ``func(data)`` and return (result, CPU seconds it took in this process); pool tasks use it."""
    started = time.process_time()
    result = func(data)
    return result, time.process_time() - started


def write_stats(stats: dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(stats, handle)
