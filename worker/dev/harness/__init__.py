"""The load and chaos harness: drives the fleet on the local stack from the outside, as clients and a
service manager would. Used by ``scripts/bench``, ``scripts/chaos``, ``scripts/demo`` and the integration,
corpus and reliability tests; nothing in the worker or the client imports it.

One concern per module:

- ``stack_env``: the stack's environment (``StackEnv``);
- ``jobs``: job messages and publishing them (``job_message``, ``publish_all``);
- ``notifications``: a subscription of the run's own on the results topic (``NotificationCollector``);
- ``topology``: a run's private topics and lane subscriptions (``RunTopology``);
- ``processes``: ``fleet worker`` slots restarted like systemd's ``Restart=always`` (``Supervisor``);
- ``metadata_server``: a fake GCE metadata server whose ``instance/preempted`` flag flips;
- ``private_stack`` and ``gcs_write_log``: emulators and tritonserver owned by one run, GCS with a log of
  every stored object version;
- ``audit``: the verdict (lost, overwritten, duplicate notifications);
- ``inputs``: line drawings and hostile inputs generated at run time;
- ``faults``: the chaos monkey; ``host``: CPU accounting, the machine and commit a report names;
- ``profiler``: an all-threads sampling profiler for the worker.

``python -m worker.dev.harness gcs|profile|watchdog`` runs the helper processes (``__main__``).
"""

from worker.dev.harness.audit import Audit, audit_jobs, delivery_stats, list_result_objects
from worker.dev.harness.gcs_write_log import WRITES_URL, object_writes
from worker.dev.harness.inputs import (
    drawing_png,
    gif_header_claiming,
    input_recipe,
    jpeg_header_claiming,
    png_bomb,
    png_header_only,
    upload,
)
from worker.dev.harness.jobs import (
    KEY_ATTRIBUTE,
    RUN_ATTRIBUTE,
    Message,
    Published,
    job_message,
    new_publisher,
    new_run_id,
    publish_all,
)
from worker.dev.harness.metadata_server import FakeMetadataServer
from worker.dev.harness.notifications import Notification, NotificationCollector
from worker.dev.harness.private_stack import PrivateStack
from worker.dev.harness.processes import (
    ManagedProcess,
    Supervisor,
    exit_on_sigterm,
    run_script,
    wait_started,
    worker_slot,
)
from worker.dev.harness.stack_env import StackEnv
from worker.dev.harness.topology import RunTopology, stack_for_run

__all__ = [
    "KEY_ATTRIBUTE",
    "RUN_ATTRIBUTE",
    "WRITES_URL",
    "Audit",
    "FakeMetadataServer",
    "ManagedProcess",
    "Message",
    "Notification",
    "NotificationCollector",
    "PrivateStack",
    "Published",
    "RunTopology",
    "StackEnv",
    "Supervisor",
    "audit_jobs",
    "delivery_stats",
    "drawing_png",
    "exit_on_sigterm",
    "gif_header_claiming",
    "input_recipe",
    "job_message",
    "jpeg_header_claiming",
    "list_result_objects",
    "new_publisher",
    "new_run_id",
    "object_writes",
    "png_bomb",
    "png_header_only",
    "publish_all",
    "run_script",
    "stack_for_run",
    "upload",
    "wait_started",
    "worker_slot",
]
