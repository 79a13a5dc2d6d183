"""Docs name only what exists: every repository path, relative link and module named in docs/ and README;
and docs/architecture.md's module table lists every module of ``worker/runtime``, and no other.

What counts as a name (the extraction rule):

- a **repository path**: any token that starts with one of the repository's top-level folders
  (``worker/``, ``tests/``, ``scripts/``, ``terraform/``, ``packer/``, ``docs/``), backticked or not, not
  inside a URL. ``<placeholder>`` segments and ``*``/``**`` globs match any name (at least one file must
  match); ``{a,b}`` lists each alternative; a trailing ``:line`` or punctuation is dropped.
- a **relative link**: a Markdown link target that is not a URL or an anchor, resolved from the doc's own
  folder (its ``#anchor`` dropped).
- a **module**: a dotted name under a part of the package (``worker.runtime.documents.images``,
  ``worker.models.drawing_analyzer.model_spec.CLASS_NAMES``): the longest importable prefix, then its
  attributes.

Paths of other projects that look like ours are listed in ``NOT_OURS`` with the reason; files that a change
not merged yet writes, in ``AWAITED`` (each must not exist yet).
"""

from __future__ import annotations

import ast
import glob
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = (*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md")
TOP = ("worker", "tests", "scripts", "terraform", "packer", "docs")
PARTS = ("shared", "runtime", "client", "dev", "models", "cli")
#: Tokens that look like a path of this repository but name another project's file.
NOT_OURS = {"tests/system.py": "Google's Pub/Sub system tests, in the google-cloud-pubsub sdist"}
#: Files that docs already merged cite and a change not merged yet writes (the VM-in-a-box work). Each
#: must not exist: once it does, the entry goes and the rule holds for it.
AWAITED = {"docs/boot-test.md", "tests/infra/test_packer_rules.py"}

_TOP = "|".join(TOP)
_PARTS = "|".join(PARTS)
_PATH = re.compile(rf"(?<![\w./-])((?:{_TOP})/[\w.*<>{{}},/-]*)")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_MODULE = re.compile(rf"(?<![\w./-])(worker\.(?:{_PARTS})(?:\.[A-Za-z_]\w*)*)")


def _alternatives(token: str) -> Iterator[str]:
    """``a/{b,c}.py`` -> ``a/b.py``, ``a/c.py`` (one brace group at a time)."""
    match = re.search(r"\{([^{}]*)\}", token)
    if match is None:
        yield token
        return
    for choice in match.group(1).split(","):
        yield from _alternatives(token[: match.start()] + choice + token[match.end() :])


def path_exists(base: Path, token: str) -> bool:
    """Whether ``token`` (placeholders and globs allowed) names at least one file or folder under ``base``."""
    for alternative in _alternatives(token):
        pattern = re.sub(r"<[^>]*>", "*", alternative)
        if any(c in pattern for c in "*?["):
            if not glob.glob(str(base / pattern), recursive=True):
                return False
        elif not (base / pattern).exists():
            return False
    return True


def module_resolves(name: str) -> bool:
    """Whether ``name``'s longest importable prefix has the rest as attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 1, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def _is_url(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target) is not None


def _repository_path(path: Path) -> str:
    """``path`` relative to the repository (``docs/x.md``), or as given when it is outside it."""
    resolved = path.resolve()
    return resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else str(path)


def named(doc: Path) -> Iterator[tuple[int, str, str]]:
    """``(line, kind, name)`` of every path, link and module ``doc`` names."""
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
        for match in _PATH.finditer(line):
            token = re.sub(r":\d+(-\d+)?$", "", match.group(1).rstrip(".,;:*"))
            if token not in NOT_OURS and token not in AWAITED:
                yield number, "path", token
        for match in _LINK.finditer(line):
            target = match.group(1).split("#", 1)[0]
            if target and not _is_url(target) and _repository_path(doc.parent / target) not in AWAITED:
                yield number, "link", target
        for match in _MODULE.finditer(line):
            yield number, "module", match.group(1).rstrip(".")


def missing(doc: Path) -> list[str]:
    """What ``doc`` names that does not exist, as ``doc:line: kind name``."""
    label = doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc.name
    found = []
    for number, kind, name in named(doc):
        if kind == "module":
            ok = module_resolves(name)
        else:
            ok = path_exists(doc.parent if kind == "link" else ROOT, name)
        if not ok:
            found.append(f"{label}:{number}: {kind} {name}")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_link_and_module_a_doc_names_exists(doc: Path) -> None:
    assert missing(doc) == []


def test_awaited_files_are_still_awaited() -> None:
    arrived = sorted(name for name in AWAITED if (ROOT / name).exists())
    assert arrived == [], "these exist now: remove them from AWAITED"


def test_the_rule_finds_what_is_gone_and_accepts_placeholders_globs_and_lists(tmp_path: Path) -> None:
    # Given a doc naming real things in every form the rule allows, and three things that do not exist
    doc = tmp_path / "doc.md"
    doc.write_text(
        "See `worker/runtime/settings.py:12`, worker/models/<name>/model.toml, tests/**/test_intake.py,\n"
        "docs/{architecture,models}.md and [the map](" + str(ROOT / "docs" / "architecture.md") + "#tree);\n"
        "`worker.runtime.documents.images.letterbox` and worker.models.drawing_analyzer.model_spec.INPUT.\n"
        "Gone: worker/runtime/pipeline.py, [old](missing.md), `worker.runtime.preprocess.preprocess_bytes`.\n"
        "Not ours: tests/system.py. A URL: https://example.com/worker/x.py\n",
        encoding="utf-8",
    )
    # Then exactly the three are reported
    found = [line.split(": ", 1)[1] for line in missing(doc)]
    assert found == [
        "path worker/runtime/pipeline.py",
        "link missing.md",
        "module worker.runtime.preprocess.preprocess_bytes",
    ]


def runtime_modules(root: Path = ROOT / "worker" / "runtime") -> set[str]:
    """``pipeline/job``-style names of the runtime's modules (a package's ``__init__`` if it has code)."""
    names = set()
    for path in root.rglob("*.py"):
        relative = path.relative_to(root).with_suffix("")
        if relative.name == "__init__":
            tree = ast.parse(path.read_text(encoding="utf-8"))
            if relative.parent == Path(".") or not any(
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for node in tree.body
            ):
                continue
            relative = relative.parent
        names.add(relative.as_posix())
    return names


def module_table(text: str) -> set[str]:
    """The modules the table under "| module | concern | imports |" names (``a/b``, ``c``: ``a/c``)."""
    table = text.split("| module | concern | imports |", 1)[1].split("\n\n", 1)[0]
    names = set()
    for row in table.splitlines()[2:]:
        prefix = ""
        for name in re.findall(r"`([^`]+)`", row.split("|")[1]):
            if "/" in name:
                prefix = name.rsplit("/", 1)[0] + "/"
                names.add(name)
            else:
                names.add(prefix + name)
    return names


def test_the_architecture_module_table_lists_every_runtime_module_and_no_other() -> None:
    listed = module_table((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    modules = runtime_modules()
    assert modules - listed == set(), "modules docs/architecture.md's table does not list"
    assert listed - modules == set(), "listed in docs/architecture.md's table, not in worker/runtime"
