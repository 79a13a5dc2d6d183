"""inference-fleet: queue-driven GPU inference workers, their client, local stack and tooling."""

__version__ = "0.1.0"
