"""The job pipeline: pull -> fetch -> preprocess -> micro-batch -> infer -> write once -> notify -> ack.

One concern per module, in the spirit of python-pubsub's ``subscriber/_protocol/``:

- ``ports``: the Protocols of the adapters the pipeline talks to, and ``Ports``;
- ``pulling``: both lanes' pull loops and the interactive lane's slot reservation;
- ``dispatcher``: the jobs in flight (a task each, lease held, decision settled) and the drain;
- ``job``: running one job to a decision (``Ack``/``Nack``);
- ``batching``: micro-batches into Triton requests, interactive work first; ``gate``: the bounded
  priority of interactive work over batch work; ``models``: a batcher per model package and a job's
  plan across them (needs first, one result);
- ``answering``: the write-once result and its notification, incl. re-notifying a stored result
  (also used by the dead-letter handler); ``outcomes``: the metric and log line of each outcome;
- ``outage``: Triton health and the monitor that waits an outage out;
- ``retries``: bounded retries of transient errors; ``preprocessors``: decode on process pools;
- ``core``: the ``Pipeline`` that wires them and owns run/drain/exit code.

One asyncio event loop runs everything: a job is a task, not a thread; blocking libraries sit behind
fixed pools owned by their adapters. Decisions: a job returns ``Ack`` or ``Nack``; the ``Settler`` applies
them in batches and the ``Leases`` owner renews deadlines while jobs run (worker/runtime/intake/).

Import from the modules (``worker.runtime.pipeline.core.Pipeline``): this package imports nothing, so the
composition root can start the preprocess pool (``preprocessors``) before the gRPC and Pub/Sub imports.
"""
