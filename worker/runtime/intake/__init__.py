"""Pub/Sub intake: unary Pull sized to free slots, one settler for acks/nacks/extensions, one lease owner.

One concern per module, as python-pubsub's ``subscriber/_protocol/`` has:

- ``pubsub_source``: the ``JobSource`` port and ``PubSubSource``, the Subscriber API over plain gRPC
  stubs (unary Pull sized to the free slots; why not streaming pull: there), ``pubsub_channel``;
- ``decisions``: ``Ack``/``Nack``/``Extend``, what a handler returns instead of calling Pub/Sub;
- ``settler``: the ``Settler``, the one owner of acks, nacks and deadline changes, applied in batches;
- ``leases``: ``Leases``, the one owner of lease renewals while jobs run.

The names are re-exported here (``from worker.runtime.intake import Ack, Settler``). The intake never
imports Triton.
"""

from __future__ import annotations

from worker.runtime.intake.decisions import Ack, Decision, Extend, Nack
from worker.runtime.intake.leases import Leases
from worker.runtime.intake.pubsub_source import (
    PUBSUB_SCOPES,
    PUBSUB_TARGET,
    JobSource,
    PubSubSource,
    pubsub_channel,
    rpc_code,
)
from worker.runtime.intake.settler import MAX_IDS_PER_REQUEST, Settler

__all__ = [
    "MAX_IDS_PER_REQUEST",
    "PUBSUB_SCOPES",
    "PUBSUB_TARGET",
    "Ack",
    "Decision",
    "Extend",
    "JobSource",
    "Leases",
    "Nack",
    "PubSubSource",
    "Settler",
    "pubsub_channel",
    "rpc_code",
]
