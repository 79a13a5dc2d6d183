"""One error for every problem found in the input: the whole list, then nothing is published."""

from __future__ import annotations

from collections.abc import Sequence

from worker.shared.errors import ClientInputInvalid

#: Problems shown in the message (all of them stay in ``ClientInputInvalid.problems``).
MAX_REPORTED_PROBLEMS = 20


def input_error(problems: Sequence[str]) -> ClientInputInvalid:
    """``nothing was published: N problems`` followed by the first ``MAX_REPORTED_PROBLEMS``, one a line."""
    shown = list(problems[:MAX_REPORTED_PROBLEMS])
    if len(problems) > MAX_REPORTED_PROBLEMS:
        shown.append(f"... and {len(problems) - MAX_REPORTED_PROBLEMS} more")
    head = "nothing was published: " + ("1 problem" if len(problems) == 1 else f"{len(problems)} problems")
    return ClientInputInvalid(head + "\n  " + "\n  ".join(shown), problems=tuple(problems))
