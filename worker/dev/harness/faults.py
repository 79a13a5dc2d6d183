"""The chaos monkey: every fault kind the soak injects, on a jittered (seeded) schedule.

kill -9 and SIGTERM of workers, the metadata server's ``instance/preempted`` flag, tritonserver killed and
restarted, Pub/Sub stream drops and UNAVAILABLE windows, redelivered acked messages and lost acks, GCS 503s
and latency. Windows are undone after a few seconds, and all of them when the monkey stops.
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

from worker.dev.devstack.admin_http import AdminClient
from worker.dev.harness.metadata_server import FakeMetadataServer
from worker.dev.harness.private_stack import PrivateStack
from worker.dev.harness.processes import Supervisor
from worker.shared import environment


class ChaosMonkey:
    """Injects every fault kind on a jittered schedule until stopped; counts what it did."""

    def __init__(
        self,
        *,
        stack: PrivateStack,
        workers: Supervisor,
        targets: int,
        metadata: FakeMetadataServer,
        rng: random.Random,
        kill_every_s: float,
    ) -> None:
        self.stack = stack
        self.workers = workers
        self.targets = targets
        self.metadata = metadata
        self.rng = rng
        self.faults: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._pubsub = AdminClient(stack.values[environment.PUBSUB_ADMIN_URL])
        self._gcs = AdminClient(stack.values[environment.GCS_ADMIN_URL])
        self._pending: list[tuple[float, str]] = []
        self._triton_starting: threading.Thread | None = None
        self.every = {
            "kill9": kill_every_s,
            "sigterm": 25.0,
            "preempted_flag": 35.0,
            "triton_restart": 60.0,
            "stream_drop": 12.0,
            "pubsub_unavailable_window": 16.0,
            "duplicate_window": 20.0,
            "gcs_503_window": 18.0,
            "gcs_latency_window": 22.0,
        }
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def start(self) -> ChaosMonkey:
        """Schedule every fault kind's first injection and start the schedule thread."""
        now = time.monotonic()
        self._next = {kind: now + every * self.rng.uniform(0.3, 1.0) for kind, every in self.every.items()}
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            now = time.monotonic()
            for due, action in list(self._pending):
                if now >= due:
                    self._pending.remove((due, action))
                    self._guard(action, getattr(self, "_undo_" + action))
            for kind, due in self._next.items():
                if now >= due:
                    self._next[kind] = now + self.every[kind] * self.rng.uniform(0.5, 1.5)
                    self._guard(kind, getattr(self, "_do_" + kind))

    def _guard(self, kind: str, action: Callable[[], bool]) -> None:
        try:
            if action() is not False:
                self.faults[kind] += 1
        except Exception as exc:  # a fault that could not be injected is reported, not fatal
            self.errors[f"{kind}: {type(exc).__name__}"] += 1

    def _later(self, delay_s: float, action: str) -> None:
        self._pending.append((time.monotonic() + delay_s, action))

    def _pick(self) -> int:
        return self.rng.randrange(self.targets)

    def _do_kill9(self) -> bool:
        return self.workers.signal(self._pick(), signal.SIGKILL)

    def _do_sigterm(self) -> bool:
        return self.workers.signal(self._pick(), signal.SIGTERM)

    def _do_preempted_flag(self) -> bool:
        slot = self.workers.slots[self._pick()]
        self.metadata.set_preempted(slot.name, True)
        # A preempted VM is replaced by a fresh one whose metadata says FALSE again.
        slot.before_restart = lambda: self.metadata.set_preempted(slot.name, False)
        return True

    def _do_triton_restart(self) -> bool:
        if self._triton_starting is not None and self._triton_starting.is_alive():
            return False
        self.stack.kill_triton()
        self._later(self.rng.uniform(2.0, 6.0), "triton_start")
        return True

    def _undo_triton_start(self) -> bool:
        # Triton takes seconds to load the model: start it off the schedule thread.
        self._triton_starting = threading.Thread(target=self.stack.start_triton, name="triton-start")
        self._triton_starting.start()
        return False

    def _do_stream_drop(self) -> bool:
        self._pubsub.set_faults(drop_streams_now=True)
        return True

    def _do_pubsub_unavailable_window(self) -> bool:
        # The worker pulls with unary Pull: UNAVAILABLE on Pull/Acknowledge/ModifyAckDeadline/Publish is
        # its equivalent of a dropped stream.
        self._pubsub.set_faults(unavailable_rate=0.2)
        self._later(self.rng.uniform(2.0, 5.0), "pubsub_unavailable_off")
        return True

    def _undo_pubsub_unavailable_off(self) -> bool:
        self._pubsub.set_faults(unavailable_rate=0.0)
        return False

    def _do_duplicate_window(self) -> bool:
        self._pubsub.set_faults(redeliver_acked_rate=0.05, ack_failure_rate=0.02)
        self._later(self.rng.uniform(3.0, 8.0), "duplicates_off")
        return True

    def _undo_duplicates_off(self) -> bool:
        self._pubsub.set_faults(redeliver_acked_rate=0.0, ack_failure_rate=0.0)
        return False

    def _do_gcs_503_window(self) -> bool:
        self._gcs.set_faults(error_rate=0.15)
        self._later(self.rng.uniform(2.0, 6.0), "gcs_503_off")
        return True

    def _undo_gcs_503_off(self) -> bool:
        self._gcs.set_faults(error_rate=0.0)
        return False

    def _do_gcs_latency_window(self) -> bool:
        self._gcs.set_faults(latency_ms=self.rng.choice([50.0, 200.0, 800.0]))
        self._later(self.rng.uniform(2.0, 6.0), "gcs_latency_off")
        return True

    def _undo_gcs_latency_off(self) -> bool:
        self._gcs.set_faults(latency_ms=0.0)
        return False

    def stop(self) -> None:
        """Stop injecting and undo every window (Triton back up, faults cleared)."""
        self._stop.set()
        self._thread.join(timeout=10)
        for _, action in self._pending:
            with contextlib.suppress(Exception):
                getattr(self, "_undo_" + action)()
        if self._triton_starting is not None:
            self._triton_starting.join(timeout=200)
        with contextlib.suppress(Exception):
            self._pubsub.clear_faults()
        with contextlib.suppress(Exception):
            self._gcs.set_faults(reset=True)
        for slot in self.workers.slots[: self.targets]:
            self.metadata.set_preempted(slot.name, False)
