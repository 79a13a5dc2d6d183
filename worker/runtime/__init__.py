"""The worker runtime: what a GPU VM runs (``fleet worker``, ``fleet dlq-handler``).

The composition root ``app`` wires settings, Pub/Sub intake, GCS storage, Triton inference,
notifications, telemetry, preemption and the pipeline. Needs the ``worker`` extra (tritonclient, numpy,
pillow, structlog, tenacity, google-cloud-monitoring). May import ``worker.shared``; never imports
``worker.client`` or ``worker.dev``.
"""
