"""What a handler decides about a leased message: immutable records the ``Settler`` applies in batches.

Handlers never call Pub/Sub: they return a decision (as python-pubsub's ``AckRequest``/``NackRequest``
records), and one owner settles them.
"""

from __future__ import annotations

from typing import NamedTuple


class Ack(NamedTuple):
    """Done: the result is durable and the notification accepted."""

    subscription: str
    ack_id: str


class Nack(NamedTuple):
    """Give the message back now (deadline 0) so another worker or attempt takes it."""

    subscription: str
    ack_id: str


class Extend(NamedTuple):
    """Keep the lease: set the deadline to ``seconds`` from now."""

    subscription: str
    ack_id: str
    seconds: int


Decision = Ack | Nack | Extend
