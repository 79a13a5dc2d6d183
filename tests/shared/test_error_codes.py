"""Error codes have one source: the classes in worker/ that set a ``code``. Each is raised somewhere, each
is in docs/contracts.md's "Error codes", and that list names no other; ``PERMANENT_ERRORS`` is derived.

Raised means the class is instantiated in worker/ (``raise X(...)``, ``error = X(...)``): a code defined
and never raised is dead, a code raised and not documented is a contract nobody was told of.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from worker.shared import errors

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "worker"
CONTRACTS = ROOT / "docs" / "contracts.md"
#: The categories every code belongs to; ``PermanentError``/``FleetError`` themselves are never raised.
CATEGORIES = ("FleetError", "PermanentError", "TransientError")
CODE = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")


def defined_codes(root: Path = PACKAGE) -> dict[str, str]:
    """``{class name: code}`` of every class under ``root`` whose body sets ``code = "..."``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            for statement in node.body:
                target = statement.targets[0] if isinstance(statement, ast.Assign) else None
                if isinstance(target, ast.Name) and target.id == "code":
                    assert isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
                    found[node.name] = str(statement.value.value)
    return found


def instantiated(root: Path = PACKAGE) -> set[str]:
    """Names called anywhere under ``root`` (``X(...)`` and ``module.X(...)``)."""
    names = set()
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                names.add(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
    return names


def documented_codes(text: str) -> set[str]:
    """The codes named in the "Error codes" section of docs/contracts.md (one-word codes: the categories')."""
    section = text.split("\n## Error codes", 1)[1].split("\n## ", 1)[0]
    categories = {getattr(errors, name).code for name in CATEGORIES}
    return set(CODE.findall(section)) | {c for c in categories if re.search(rf"\b{c}\b", section)}


def raised_codes(root: Path = PACKAGE) -> dict[str, str]:
    """``{class name: code}`` of the classes with a code that are instantiated under ``root``."""
    called = instantiated(root)
    return {name: code for name, code in defined_codes(root).items() if name in called}


def never_raised(root: Path = PACKAGE) -> list[str]:
    """Classes with a code that nothing under ``root`` instantiates, the categories aside."""
    called = instantiated(root)
    return sorted(n for n in defined_codes(root) if n not in called and n not in CATEGORIES)


def test_every_error_class_with_a_code_is_raised_somewhere() -> None:
    assert never_raised() == []


def test_every_raised_code_is_documented_and_every_documented_code_is_raised() -> None:
    raised = set(raised_codes().values())
    documented = documented_codes(CONTRACTS.read_text(encoding="utf-8"))
    assert raised - documented == set(), "raised, not in docs/contracts.md"
    assert documented - raised == set(), "in docs/contracts.md, raised nowhere"


def test_permanent_errors_are_every_permanent_class() -> None:
    permanent = {
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, errors.PermanentError)
    } - {errors.PermanentError}
    assert set(errors.PERMANENT_ERRORS) == permanent
    codes = {cls.code for cls in errors.PERMANENT_ERRORS}
    assert {
        "MODEL_PREPROCESS_FAILED",
        "MODEL_OUTPUT_INVALID",
        "JOB_ID_CONFLICT",
        "INVALID_NAMESPACE",
    } <= codes


def test_the_checks_find_a_planted_dead_code_and_an_undocumented_one(tmp_path: Path) -> None:
    # Given a tree with one error class nobody raises and one that is raised but documented nowhere
    (tmp_path / "errors.py").write_text(
        "class Ghost(PermanentError):\n    code = 'GHOST_CODE'\n\n"
        "class Fresh(PermanentError):\n    code = 'FRESH_CODE'\n",
        encoding="utf-8",
    )
    (tmp_path / "use.py").write_text("def f():\n    raise errors.Fresh('x')\n", encoding="utf-8")
    # Then the first is never raised and the second is raised but not in a contracts text without it
    assert never_raised(tmp_path) == ["Ghost"]
    documented = documented_codes("# Contracts\n## Error codes\nPermanent: GHOST_CODE.\n## Versioning\nX_Y\n")
    assert set(raised_codes(tmp_path).values()) - documented == {"FRESH_CODE"}
    assert documented == {"GHOST_CODE"}
