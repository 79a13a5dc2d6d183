"""Load a directory of model packages: declarations read, handlers imported, the catalog checked.

A package is a folder with ``model.toml`` (``declaration``), the ONNX file and a handler module that
defines ``postprocess(outputs: dict[str, numpy.ndarray], params: dict) -> dict`` (one page's JSON-able
outputs, keyed by analysis) and at least one of ``preprocess_page(page: documents.Page, params: dict)``
(the worker decodes the page at the package's size) or ``preprocess(data: bytes, params: dict)`` (the
package decodes the bytes itself), each returning one page's input tensors without the batch axis
(or an ``items.Prepared``: several items and a context; docs/models.md). Everything that can be checked
without running the model is checked here, and the first problem stops the load with the package named.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from worker.runtime.model_packages.catalog import Catalog
from worker.runtime.model_packages.declaration import (
    DECLARATION_FILE,
    Declaration,
    PackageInvalid,
    read_declaration,
)
from worker.runtime.model_packages.sources import file_sha256

#: The folder of the packages that ship with the worker (FLEET_MODELS_DIR overrides it).
BUNDLED_MODELS_DIR: Final = Path(__file__).resolve().parents[2] / "models"
#: Each package's modules are imported under ``<prefix><model name>`` (``_import_handler``).
PACKAGE_MODULE_PREFIX: Final = "fleet_model_package_"

#: ``(data, params) -> tensors`` or an ``items.Prepared`` (what the handler returns is checked by
#: ``items.check_prepared``, so the loader's types stay loose).
Preprocess = Callable[[bytes, dict[str, Any]], Any]
#: ``(documents.Page, params) -> tensors`` (typed loosely: the loader does not import the decoders).
PreprocessPage = Callable[[Any, dict[str, Any]], Any]
#: ``(outputs, params) -> answers``: one item's outputs, or the list of a fan-out package's items'.
Postprocess = Callable[[Any, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class ModelPackage:
    """One loaded package: where it is, what it declares, its functions and the model's digest.

    ``preprocess_page``: the handler's, or None. ``preprocess``: the handler's; for a handler that
    defines only ``preprocess_page``, the worker's decode of the bytes' page ``params["page"]`` (default
    1) at the package's page size handed to it, so tools that feed files (parity, ``fleet models
    check``) call every package the same way.
    """

    folder: Path
    declaration: Declaration
    preprocess: Preprocess
    postprocess: Postprocess
    #: sha256 of the model file: the engine cache key's first part (with the GPU and TensorRT version).
    model_digest: str
    preprocess_page: PreprocessPage | None = None

    @property
    def name(self) -> str:
        return self.declaration.name

    @property
    def model_path(self) -> Path:
        return self.folder / self.declaration.model_file

    def reference_inputs(self) -> list[Path]:
        """The parity check's reference files, in a stable order."""
        found: dict[Path, None] = {}
        for pattern in self.declaration.parity.reference_inputs:
            for path in sorted(self.folder.glob(pattern)):
                if path.is_file():
                    found[path] = None
        return list(found)


def load_packages(directory: Path | str) -> Catalog:
    """Every package in ``directory`` (each sub-folder holding a ``model.toml``), checked together."""
    return Catalog(tuple(load_package(folder) for folder in package_folders(directory)))


def package_folders(directory: Path | str) -> list[Path]:
    """``directory`` itself when it is a package (holds ``model.toml``), else its sub-folders that are."""
    root = Path(directory)
    if (root / DECLARATION_FILE).is_file():
        return [root]
    if not root.is_dir():
        raise PackageInvalid(str(root), "the models directory does not exist")
    folders = sorted(p for p in root.iterdir() if (p / DECLARATION_FILE).is_file())
    if not folders:
        raise PackageInvalid(str(root), f"no model package (a folder with {DECLARATION_FILE}) in it")
    return folders


def load_package(folder: Path) -> ModelPackage:
    """Read one package's declaration and import its handler; raises PackageInvalid."""
    declaration = read_declaration(folder)
    model_digest = _model_digest(folder, declaration)
    module = _import_handler(folder, declaration)
    preprocess_page = _function(module, "preprocess_page", folder.name, required=False)
    preprocess = _function(module, "preprocess", folder.name, required=preprocess_page is None)
    if preprocess is None:
        preprocess = functools.partial(_decoded_page, preprocess_page, declaration)
    postprocess = _function(module, "postprocess", folder.name)
    package = ModelPackage(
        folder=folder,
        declaration=declaration,
        preprocess=preprocess,
        postprocess=postprocess,
        model_digest=model_digest,
        preprocess_page=preprocess_page,
    )
    if not package.reference_inputs():
        raise PackageInvalid(folder.name, "parity.reference_inputs match no file in the package")
    return package


def _model_digest(folder: Path, declaration: Declaration) -> str:
    """The model file's sha256; a fetched file must be present and be the one its source pins."""
    path = folder / declaration.model_file
    source = declaration.source
    if source is None:
        return file_sha256(path)
    fetch = f"fetch it with `fleet models fetch {folder}` (source: {source.describe()})"
    if not path.is_file():
        raise PackageInvalid(folder.name, f"model file {declaration.model_file!r} is missing: {fetch}")
    digest = file_sha256(path)
    if digest != source.sha256:
        raise PackageInvalid(
            folder.name,
            f"model file {declaration.model_file!r} has sha256 {digest}, its source pins {source.sha256}: "
            f"{fetch}",
        )
    return digest


def _import_handler(folder: Path, declaration: Declaration) -> ModuleType:
    """The handler, imported as a module of a Python package made for this model package.

    The package ``fleet_model_package_<name>`` has the folder as its ``__path__``, so a handler imports
    its sibling modules relatively (``from . import spec``) whether the folder is bundled or a team's. A
    new load of the same name starts from a fresh package: nothing of an earlier load's folder is reused.
    The modules stay registered in ``sys.modules``, where dataclasses and pickle look a module up by name;
    a spawned pool process has none of them and loads the package from its folder (``handlers.package_at``).
    """
    package_name = f"{PACKAGE_MODULE_PREFIX}{declaration.name}"
    _forget(package_name)
    package_spec = importlib.machinery.ModuleSpec(package_name, None, is_package=True)
    package_spec.submodule_search_locations = [str(folder)]
    sys.modules[package_name] = importlib.util.module_from_spec(package_spec)
    relative = Path(declaration.handler_file).with_suffix("")
    name = ".".join((package_name, *relative.parts))
    spec = importlib.util.spec_from_file_location(name, folder / declaration.handler_file)
    if spec is None or spec.loader is None:
        raise PackageInvalid(folder.name, f"{declaration.handler_file} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        _forget(package_name)
        hint = ""
        if isinstance(exc, ImportError) and declaration.requirements:
            listed = ", ".join(declaration.requirements)
            hint = f" (declared requirements: {listed}; `fleet models check` names a missing one)"
        raise PackageInvalid(
            folder.name, f"importing {declaration.handler_file} failed: {type(exc).__name__}: {exc}{hint}"
        ) from exc
    return module


def _forget(package_name: str) -> None:
    """Drop a package and its modules from ``sys.modules`` (objects already taken from them live on)."""
    for name in [m for m in sys.modules if m == package_name or m.startswith(package_name + ".")]:
        del sys.modules[name]


def _decoded_page(
    preprocess_page: PreprocessPage, declaration: Declaration, data: bytes, params: dict[str, Any]
) -> Any:
    """A ``preprocess_page`` package fed bytes: the page decoded by the worker, then the handler's."""
    # the decoders (PIL, PDFium) load on first use
    from worker.runtime import documents  # noqa: PLC0415
    from worker.runtime.model_packages.handlers import page_decode  # noqa: PLC0415

    page = documents.decode_page(data, int(params.get("page", 1)), page_decode(declaration))
    return preprocess_page(page, params)


_FIRST_ARGUMENT = {"preprocess_page": "page", "preprocess": "data", "postprocess": "outputs"}


def _function(module: ModuleType, name: str, package: str, *, required: bool = True) -> Any:
    """The handler's ``name`` function (None when absent and not ``required``), taking two arguments."""
    function = getattr(module, name, None)
    if function is None and not required:
        return None
    if not callable(function):
        if name == "preprocess":
            raise PackageInvalid(package, "the handler defines no preprocess_page() or preprocess() function")
        raise PackageInvalid(package, f"the handler defines no {name}() function")
    try:
        inspect.signature(function).bind(None, None)
    except TypeError as exc:
        first = _FIRST_ARGUMENT[name]
        raise PackageInvalid(package, f"{name}() must take two arguments ({name}({first}, params))") from exc
    return function
