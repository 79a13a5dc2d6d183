"""Policy as pure functions: backoff, lease deadlines, batch formation, load hysteresis, error classes.

Nothing here does I/O or reads a clock; callers pass the numbers in, so every rule is tested directly
(tests/runtime/test_policy_contracts_settings.py). Options are keyword-only so a call site reads as the
rule it applies.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from worker.shared import errors

PUBSUB_MIN_ACK_DEADLINE_S = 10
PUBSUB_MAX_ACK_DEADLINE_S = 600


def backoff_s(
    attempt: int,
    *,
    base_s: float = 0.2,
    cap_s: float = 5.0,
    jitter: float = 0.5,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff for retry number ``attempt`` (1-based), capped, with proportional jitter.

    Jitter spreads retries of many workers hit by the same outage (thundering herd after a restart).
    """
    if attempt < 1:
        return 0.0
    delay = min(cap_s, base_s * (2.0 ** (attempt - 1)))
    if jitter <= 0:
        return delay
    spread = delay * jitter
    return max(0.0, delay - spread + (rng or random).random() * 2 * spread)


def lease_extension_s(*, held_s: float, max_processing_s: float, ack_deadline_s: int) -> int:
    """The deadline (seconds from now) to request for a message held ``held_s`` so far.

    Never extends past ``max_processing_s`` (plus one minimum deadline so the timeout failure can still be
    written and acked). Returns 0 when the message should not be extended any more.
    """
    remaining = max_processing_s + PUBSUB_MIN_ACK_DEADLINE_S - held_s
    if remaining <= 0:
        return 0
    wanted = min(float(ack_deadline_s), remaining)
    return int(min(PUBSUB_MAX_ACK_DEADLINE_S, max(PUBSUB_MIN_ACK_DEADLINE_S, math.ceil(wanted))))


def extend_interval_s(*, ack_deadline_s: int) -> float:
    """How often the lease owner renews: a third of the deadline leaves two chances before expiry."""
    return max(1.0, ack_deadline_s / 3.0)


def batch_due(*, queued: int, oldest_age_ms: float, max_size: int, max_delay_ms: float) -> bool:
    """Send a batch request now? When full, or when its oldest item waited ``max_delay_ms``."""
    if queued <= 0:
        return False
    return queued >= max_size or oldest_age_ms >= max_delay_ms


@dataclass(frozen=True)
class LoadState:
    """Whether pulling is paused; the one number is ``in_flight / slots``."""

    paused: bool = False


def next_load_state(
    state: LoadState, *, in_flight: int, slots: int, pause_at: float = 1.0, resume_below: float = 0.8
) -> LoadState:
    """Hysteresis: pause pulling at load >= ``pause_at``, resume only below ``resume_below``.

    Resuming at 0.8 rather than the first free slot makes each Pull ask for several messages, so a busy
    worker makes fewer, larger pulls (less CPU per job) yet never holds more than ``slots``.
    """
    load = in_flight / slots if slots > 0 else math.inf
    if state.paused:
        return LoadState(paused=load >= resume_below)
    return LoadState(paused=load >= pause_at)


def pull_size(*, in_flight: int, slots: int) -> int:
    """How many messages to ask for: exactly the free slots, never more (no hoarding)."""
    return max(0, slots - in_flight)


# --- error classification: one declarative place ----------------------------------------------------

_GRPC_TRANSIENT = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL", "UNKNOWN", "CANCELLED"}
)
# NOT_FOUND from Triton means "model not loaded (yet)": the server is restarting, not the job's fault.
_GRPC_TRANSIENT_INFERENCE = _GRPC_TRANSIENT | {"NOT_FOUND", "FAILED_PRECONDITION"}
_HTTP_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})


def grpc_code_name(code: object) -> str:
    """``StatusCode.UNAVAILABLE`` / ``"StatusCode.UNAVAILABLE"`` / ``"UNAVAILABLE"`` -> ``UNAVAILABLE``."""
    name = getattr(code, "name", None)
    text = name if isinstance(name, str) else str(code)
    return text.rsplit(".", 1)[-1].upper()


def classify_inference_status(code: object, message: str) -> errors.FleetError:
    """A Triton gRPC status -> ModelRejected (the request is wrong) or InferenceUnavailable (retry)."""
    name = grpc_code_name(code)
    if name in _GRPC_TRANSIENT_INFERENCE or not name:
        return errors.InferenceUnavailable(f"triton {name}: {message[:200]}")
    return errors.ModelRejected(f"triton {name}: {message[:200]}")


def is_transient_http(status: int) -> bool:
    """GCS/HTTP statuses worth retrying (429 and 5xx, plus 408)."""
    return status in _HTTP_TRANSIENT or 500 <= status <= 599
