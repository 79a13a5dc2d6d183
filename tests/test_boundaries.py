"""The tree tells where code runs: imports point one way between the subpackages of ``worker``.

- ``worker.shared`` (contracts) imports only the standard library and itself;
- ``worker.runtime`` (a GPU VM) and ``worker.client`` (a publisher) import ``worker.shared`` and
  themselves, never each other and never ``worker.dev``; the runtime knows no model, so it never
  imports a bundled model package (``worker.models.*``) either: it loads every package by folder;
- ``worker.dev`` (a laptop or CI) may import everything;
- ``worker/models/`` (bundled model packages) may use ``worker.shared`` and ``worker.runtime``, like a
  team's own package would, never the client or dev tooling; a package imports its own modules
  relatively and no other package (the worker imports each package by folder, under a name of its own:
  ``worker.models.<name>`` in a package would load a second copy, from the installed wheel);
- the ``fleet`` entry point (``worker.cli``) imports only ``worker.shared``: the parts it dispatches to
  are named as strings and imported when their command runs.

Every import counts, also those inside functions. The checker is tested on a planted crossing too.
"""

from __future__ import annotations

import ast
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "worker"

#: Which parts of ``worker`` each part may import (itself included).
ALLOWED: dict[str, frozenset[str]] = {
    "shared": frozenset({"shared"}),
    "runtime": frozenset({"shared", "runtime"}),
    "client": frozenset({"shared", "client"}),
    "dev": frozenset({"shared", "runtime", "client", "dev", "cli", "models"}),
    # bundled model packages: their handlers run in the worker (and its preprocess pool)
    "models": frozenset({"shared", "runtime", "models"}),
    "cli": frozenset({"shared"}),
}
#: Third-party packages a client install does not have (they come with the ``worker`` extra or later).
NOT_IN_CLIENT = frozenset({"numpy", "PIL", "tritonclient", "structlog", "tenacity", "onnxruntime"})


def part_of(path: Path, root: Path) -> str:
    relative = path.relative_to(root)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_modules(path: Path, root: Path) -> Iterator[tuple[int, str, bool]]:
    """``(line, absolute module name, relative?)`` of every import in ``path`` (relative ones resolved)."""
    package = ["worker", *path.relative_to(root).parent.parts]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, False
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if module == "worker":  # ``from worker import shared`` names the part in the alias
                for alias in node.names:
                    yield node.lineno, f"worker.{alias.name}", bool(node.level)
            else:
                yield node.lineno, module, bool(node.level)


def _another_package(path: Path, root: Path, module: str, relative: bool) -> bool:
    """Whether a bundled package's ``path`` imports ``worker.models`` other than relatively, its own."""
    if not module.startswith("worker.models"):
        return False
    package = ".".join(["worker", *path.relative_to(root).parts[:2]])
    return not (relative and (module == package or module.startswith(package + ".")))


def crossings(root: Path) -> list[str]:
    """Every import in the tree under ``root`` (a ``worker`` package) that breaks ``ALLOWED``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        part = part_of(path, root)
        if part not in ALLOWED:  # __init__.py of the package itself
            continue
        for line, module, relative in imported_modules(path, root):
            top = module.split(".")[0]
            where = f"{path.relative_to(root.parent)}:{line}: {part} imports {module}"
            if top == "worker":
                target = module.split(".")[1] if "." in module else "worker"
                if target not in ALLOWED[part] and target != "__version__":
                    found.append(where)
                elif part == "models" and _another_package(path, root, module, relative):
                    found.append(where + " (a package imports only its own modules, relatively)")
            elif part == "shared" and top not in sys.stdlib_module_names and top != "__future__":
                found.append(where + " (shared code uses the standard library only)")
            elif part == "client" and top in NOT_IN_CLIENT:
                found.append(where + " (not installed with the client)")
    return found


def test_every_import_points_the_allowed_way() -> None:
    # Given the package as committed, when every import is checked, then none crosses a boundary
    assert crossings(PACKAGE) == []


@pytest.mark.parametrize(
    ("planted_in", "line", "expected"),
    [
        ("runtime/pipeline_extra.py", "from worker.dev import loadgen\n", "runtime imports worker.dev"),
        ("runtime/late.py", "def f():\n    from worker.client import sdk\n", "runtime imports worker.client"),
        (
            "runtime/model_packages/loader.py",
            "from worker.models.drawing_analyzer import model_spec\n",
            "runtime imports worker.models.drawing_analyzer",
        ),
        (
            "runtime/settings.py",
            "def f():\n    import worker.models.symbol_recognizer.handler\n",
            "runtime imports worker.models.symbol_recognizer.handler",
        ),
        ("client/fast.py", "import numpy\n", "not installed with the client"),
        ("client/rel.py", "from ..runtime import app\n", "client imports worker.runtime"),
        ("shared/x.py", "from worker import runtime\n", "shared imports worker.runtime"),
        ("shared/y.py", "import yaml\n", "standard library only"),
        ("cli.py", "from worker.client import sdk\n", "cli imports worker.client"),
        (
            "models/drawing_analyzer/handler.py",
            "from worker.dev import drawings\n",
            "models imports worker.dev",
        ),
        (
            "models/drawing_analyzer/answers.py",
            "from worker.models.drawing_analyzer import model_spec\n",
            "imports only its own modules, relatively",
        ),
        (
            "models/symbol_recognizer/handler.py",
            "from ..drawing_analyzer import abstention\n",
            "models imports worker.models.drawing_analyzer",
        ),
    ],
)
def test_a_planted_crossing_is_found(tmp_path: Path, planted_in: str, line: str, expected: str) -> None:
    # Given a copy of the package with one import that breaks a boundary
    root = tmp_path / "worker"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    target = root / planted_in
    before = target.read_text(encoding="utf-8") if target.exists() else ""
    target.write_text(before + line, encoding="utf-8")
    # When the copy is checked, then exactly that crossing is reported
    found = crossings(root)
    assert len(found) == 1 and expected in found[0], found


def test_dev_tooling_may_import_everything(tmp_path: Path) -> None:
    root = tmp_path / "worker"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "dev" / "anything.py").write_text(
        "from worker.runtime import app\nfrom worker.client import sdk\nimport numpy\n"
        "from worker.models.drawing_analyzer import model_spec\n",
        encoding="utf-8",
    )
    assert crossings(root) == []
