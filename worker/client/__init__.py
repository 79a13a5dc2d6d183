"""The client: what a publisher installs (the base install) — the SDK (``sdk.FleetClient``) and the
``fleet submit | results | status | dlq`` commands (``cli``).

Depends on google-cloud-pubsub, google-cloud-storage and rich only. May import ``worker.shared``; never
imports ``worker.runtime`` or ``worker.dev``.
"""
