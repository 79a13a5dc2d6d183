"""The job pipeline: pull -> fetch -> preprocess -> micro-batch -> infer -> write once -> notify -> ack.

One concern per module, in the spirit of python-pubsub's ``subscriber/_protocol/``:

- ``ports``: the Protocols of the adapters the pipeline talks to, and ``Ports``;
- ``pulling``: both lanes' pull loops and the interactive lane's slot reservation;
- ``dispatcher``: the jobs in flight (a task each, lease held, decision settled) and the drain;
- ``job``: running one job to a decision (``Ack``/``Nack``);
- ``batching``: micro-batches into Triton requests, interactive work first; ``gate``: the bounded
  priority of interactive work over batch work;
- ``answering``: the write-once result and its notification, incl. re-notifying a stored result
  (also used by the dead-letter handler); ``outcomes``: the metric and log line of each outcome;
- ``outage``: Triton health and the monitor that waits an outage out;
- ``retries``: bounded retries of transient errors; ``preprocessors``: decode on process pools;
- ``core``: the ``Pipeline`` that wires them and owns run/drain/exit code.

One asyncio event loop runs everything: a job is a task, not a thread; blocking libraries sit behind
fixed pools owned by their adapters. Decisions: a job returns ``Ack`` or ``Nack``; the ``Settler`` applies
them in batches and the ``Leases`` owner renews deadlines while jobs run (worker/runtime/intake.py).
"""

from worker.runtime.pipeline.answering import Answered, Answerer
from worker.runtime.pipeline.batching import Batcher
from worker.runtime.pipeline.core import Pipeline
from worker.runtime.pipeline.gate import InteractiveGate
from worker.runtime.pipeline.outage import Health
from worker.runtime.pipeline.ports import Ports
from worker.runtime.pipeline.preprocessors import InlinePreprocessor, PoolPreprocessor
from worker.runtime.pipeline.retries import with_retries

__all__ = [
    "Answered",
    "Answerer",
    "Batcher",
    "Health",
    "InlinePreprocessor",
    "InteractiveGate",
    "Pipeline",
    "PoolPreprocessor",
    "Ports",
    "with_retries",
]
