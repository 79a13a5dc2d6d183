"""A package's declared Python requirements (``[model] requirements``, PEP 508) against what is installed.

The worker image, the local stack and a team image install a package's requirements where its handler
runs; ``fleet models check`` uses ``unmet`` to name the one that is missing instead of letting the
handler's import fail with a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement


def unmet(requirements: Sequence[str]) -> list[str]:
    """One sentence per requirement the installed distributions do not satisfy (markers evaluated here)."""
    problems = []
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            problems.append(f"requirement {text!r} is not a PEP 508 requirement: {exc}")
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # not meant for this interpreter or platform
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"requirement {text!r} is not installed")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"requirement {text!r} is not met: {requirement.name} {installed} is installed")
    return problems
