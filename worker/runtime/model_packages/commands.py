"""``fleet models check|parity|fetch|repository DIR``: what a user runs on model packages before an image.

``check`` is what a user runs before building an image: it checks that the requirements each package
declares (``[model] requirements``, PEP 508) are installed, loads a package (or a folder of packages) the
way the worker does, checks the declared tensors against the ONNX graph, and answers each package's
reference inputs (or ``--input FILE``) as the worker would: a package whose analyses have ``needs`` runs
after the packages offering them (found in the same folder, or ``--models DIR``), its preprocess gets
their answers in ``params["needs"]``, its items (fan-out, buckets) go through the graph (onnxruntime) and
its postprocess gets their outputs with the context (``chain``). It prints one JSON line per input: the
package's analyses as the worker would answer them. ``parity`` runs the precision gate on CPU (FP32 and an
FP16 conversion of the graph, ``chain.gate_on_cpu``) and prints each package's decision as JSON.
``fetch`` downloads and verifies the model file of each package that declares a ``[model.source]``
(``sources``). ``repository`` writes the Triton model repository a VM's boot serves (the GPU variant's
engines come from the engine step). Exit codes: 0 ok, 1 a package is refused, a fetch fails, an input
fails (or no precision passes), 2 usage. Needs the ``models`` extra (onnxruntime, packaging);
registering imports nothing heavy.
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
    from worker.runtime.model_packages.chain import Infer
    from worker.runtime.model_packages.loader import ModelPackage


def register(subparsers: Any) -> None:
    """Add ``fleet models check``, ``parity``, ``fetch`` and ``repository``."""
    parser = subparsers.add_parser(
        "models", help="model packages: check one, fetch model files, write a Triton repository"
    )
    commands = parser.add_subparsers(
        dest="models_command", metavar="check|parity|fetch|repository", required=True
    )
    check = commands.add_parser(
        "check", help="validate a package (or a folder of them) and run it on its reference inputs"
    )
    check.add_argument("dir", type=Path, help="a package folder (with model.toml) or a folder of packages")
    check.add_argument("--input", type=Path, action="append", help="run this file instead (repeatable)")
    check.add_argument("--analyses", help="comma list of analyses to answer (default: all of the package's)")
    check.add_argument("--models", type=Path, help="the packages its needs come from (default: DIR's folder)")
    check.set_defaults(func=run_check)
    gate = commands.add_parser("parity", help="the precision gate on CPU (FP32, FP16 graph in onnxruntime)")
    gate.add_argument("dir", type=Path, help="a package folder (with model.toml) or a folder of packages")
    gate.add_argument("--models", type=Path, help="the packages its needs come from (default: DIR's folder)")
    gate.add_argument("--work", type=Path, help="where the FP16 graphs go (default: a temporary folder)")
    gate.set_defaults(func=run_parity)
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
    from worker.runtime.model_packages import chain, onnx_tools
    from worker.runtime.model_packages.declaration import PackageInvalid

    try:
        check_requirements(args.dir)
        runs = chain.load_folder(args.dir, args.models)
        for package in {p.name: p for catalog, _ in runs for p in catalog.packages}.values():
            onnx_tools.check_graph(package)
    except PackageInvalid as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    infer = onnx_tools.OnnxInfer()
    failed = False
    requested = set(args.analyses.split(",")) if args.analyses else None
    for catalog, package in runs:
        own = tuple(a.name for a in package.declaration.analyses)
        asked = own if requested is None else tuple(a for a in own if a in requested)
        if not asked:
            continue
        for path in args.input or package.reference_inputs():
            line = check_input(catalog, package, path, asked, infer)
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


def check_input(
    catalog: Catalog, package: ModelPackage, path: Path, asked: tuple[str, ...], infer: Infer
) -> dict[str, Any]:
    """One input through the chain of ``asked`` (needs first), as the worker would answer it."""
    from worker.runtime.model_packages import chain
    from worker.shared import errors

    line: dict[str, Any] = {"model": package.name, "input": str(path)}
    try:
        line["outputs"] = chain.run_plan(catalog, asked, path.read_bytes(), {"page": 1}, infer)
    except errors.FleetError as exc:
        line["error"] = {"code": exc.code, "message": str(exc)}
    except Exception as exc:  # the handler's own bug: what the worker would answer
        line["error"] = {"code": errors.ModelPreprocessFailed.code, "message": f"{type(exc).__name__}: {exc}"}
    return line


def run_parity(args: argparse.Namespace) -> int:
    """``fleet models parity``: one JSON line per package, the gate's decision on CPU; the exit code."""
    import tempfile

    from worker.runtime.model_packages import chain, parity
    from worker.runtime.model_packages.answers import RuleInvalid
    from worker.runtime.model_packages.declaration import PackageInvalid
    from worker.shared import errors

    try:
        runs = chain.load_folder(args.dir, args.models)
    except PackageInvalid as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    failed = False
    with tempfile.TemporaryDirectory(prefix="fleet-parity-") as scratch:
        for catalog, package in runs:
            line: dict[str, Any] = {"model": package.name}
            try:
                decision = chain.gate_on_cpu(catalog, package, args.work or Path(scratch))
                line.update(decision.provenance())
            except (parity.NoPrecisionWithinTolerance, PackageInvalid, RuleInvalid, errors.FleetError) as exc:
                line["error"] = str(exc)
                failed = True
            print(json.dumps(line, sort_keys=True))
    return exit_codes.FAILED if failed else exit_codes.OK


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
