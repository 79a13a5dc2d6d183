"""The ``fleet`` command: one entry point, one sub-command module per concern.

Each module listed in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its sub-commands
and sets ``func`` (``(argparse.Namespace) -> int``, the exit code) on each parser. Modules are imported
lazily by ``main`` so ``fleet submit`` never imports Triton and ``fleet worker`` never imports the client.

Exit codes: 0 success, 1 some job failed or expired (or the command failed), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# Modules that contribute sub-commands; a module missing from the installed tree is skipped so a
# partial checkout still gives a working CLI for what is there.
COMMAND_MODULES: tuple[str, ...] = (
    "worker.app",
    "worker.client_cli",
    "worker.devstack.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    code: int = func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
