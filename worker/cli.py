"""The ``fleet`` command: one entry point, one sub-command module per part of the package.

Each module listed in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its sub-commands
and sets ``func`` (``(argparse.Namespace) -> int``, the exit code) on each parser. Registering imports
only the standard library; the heavy imports happen when a command runs, so ``fleet submit`` never
imports Triton and ``fleet worker`` never imports the client.

A part whose optional dependencies are not installed still shows its commands where that helps (a
client-only install learns that ``fleet worker`` needs the ``worker`` extra) or hides them (``fleet
devstack`` appears only with the ``dev`` extra). Exit codes: ``worker.shared.exit_codes``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from worker.shared import exit_codes


@dataclass(frozen=True)
class CommandPart:
    """A module of sub-commands and the extra that its commands need at run time."""

    module: str
    extra: str | None
    #: Top-level import names that the extra installs; a missing one means the extra is missing.
    requires: tuple[str, ...] = ()
    #: Hide the commands (instead of explaining) when the extra is missing.
    hidden_without_extra: bool = False


COMMAND_PARTS: tuple[CommandPart, ...] = (
    CommandPart(
        "worker.runtime.app",
        extra="worker",
        requires=("numpy", "PIL", "tritonclient", "structlog", "tenacity"),
    ),
    CommandPart("worker.client.cli", extra=None, requires=("google.cloud.pubsub_v1", "rich")),
    CommandPart(
        "worker.dev.devstack.cli",
        extra="dev",
        requires=("gcp_storage_emulator", "numpy", "PIL"),
        hidden_without_extra=True,
    ),
    CommandPart("worker.runtime.model_packages.engine_build", extra="models", requires=("onnxruntime",)),
    CommandPart(
        "worker.runtime.model_packages.commands",
        extra="models",
        requires=("onnxruntime", "onnx", "packaging"),
    ),
)
COMMAND_MODULES: tuple[str, ...] = tuple(part.module for part in COMMAND_PARTS)


def missing_modules(names: Sequence[str]) -> list[str]:
    """The import names among ``names`` that cannot be found (without importing them)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def install_hint(extra: str | None) -> str:
    target = f"inference-fleet[{extra}]" if extra else "inference-fleet"
    return f"pip install '{target}'"


def _needs_extra(part: CommandPart, missing: list[str]) -> Callable[[argparse.Namespace], int]:
    def explain(args: argparse.Namespace) -> int:
        what = args.command or "this command"
        sys.stderr.write(
            f"fleet {what}: needs the '{part.extra}' extra of inference-fleet, which is not installed "
            f"(missing: {', '.join(missing)}). Install it with: {install_hint(part.extra)}\n"
        )
        return exit_codes.MISSING_EXTRA

    return explain


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for part in COMMAND_PARTS:
        missing = missing_modules(part.requires)
        if missing and part.hidden_without_extra:
            continue
        try:
            module = importlib.import_module(part.module)
        except ModuleNotFoundError as exc:
            if exc.name == part.module:  # a partial tree: that part is simply not there
                continue
            raise
        before = set(subparsers.choices)
        module.register(subparsers)
        if missing:
            for name in set(subparsers.choices) - before:
                subparsers.choices[name].set_defaults(func=_needs_extra(part, missing))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return exit_codes.USAGE
    code: int = func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
