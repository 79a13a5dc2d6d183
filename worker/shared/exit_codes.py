"""Exit codes of every ``fleet`` command and of the worker process: one home, imported everywhere."""

from __future__ import annotations

from typing import Final

OK: Final = 0
#: Some job failed or expired, or the command itself failed.
FAILED: Final = 1
#: Bad arguments or bad input; nothing was published.
USAGE: Final = 2
#: The worker stopped because Triton stayed unreachable past ``FLEET_TRITON_OUTAGE_EXIT_S``.
TRITON_OUTAGE: Final = 3
#: The worker could not start (bad settings, Triton never ready, a model that does not validate).
STARTUP_FAILED: Final = 4
#: The worker hit a bug; systemd restarts it.
INTERNAL: Final = 5
#: The command needs an optional part of the package that is not installed (``pip install ...[extra]``).
MISSING_EXTRA: Final = 6
