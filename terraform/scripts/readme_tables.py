#!/usr/bin/env python3
"""Regenerate (or check) the Inputs/Outputs tables of terraform/README.md from variables.tf/outputs.tf.

    python terraform/scripts/readme_tables.py          # rewrite the tables in place
    python terraform/scripts/readme_tables.py --check  # exit 1 when the README is out of date

The tables live between ``<!-- BEGIN_TF_INPUTS -->``/``<!-- END_TF_INPUTS -->`` and the matching
``OUTPUTS`` markers; everything else in the README is left alone. Needs python-hcl2 (the .venv has it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

MODULE_DIR = Path(__file__).resolve().parent.parent
README = MODULE_DIR / "README.md"
OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
MARKERS = {
    "INPUTS": ("<!-- BEGIN_TF_INPUTS -->", "<!-- END_TF_INPUTS -->"),
    "OUTPUTS": ("<!-- BEGIN_TF_OUTPUTS -->", "<!-- END_TF_OUTPUTS -->"),
}


def load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        data: dict[str, Any] = hcl2.load(handle, serialization_options=OPTIONS)
    return data


def blocks(path: Path, kind: str) -> list[tuple[str, dict[str, Any]]]:
    """``[(name, body)]`` of every ``kind`` block (variable/output) in file order."""
    return [(name, body) for block in load(path).get(kind, []) for name, body in block.items()]


def unwrap(expr: Any) -> str:
    """``${map(number)}`` -> ``map(number)``; other values as compact JSON."""
    if isinstance(expr, str):
        match = re.fullmatch(r"\$\{(.*)\}", expr, flags=re.DOTALL)
        return match.group(1) if match else json.dumps(expr)
    return json.dumps(expr, separators=(", ", ": "))


def type_text(expr: Any) -> str:
    """A variable's type: a bare keyword (``string``) parses as a plain string, anything else as ``${..}``."""
    if isinstance(expr, str) and re.fullmatch(r"[a-z]+", expr):
        return expr
    return unwrap(expr)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def code(text: str) -> str:
    return f"`{cell(text)}`"


def inputs_table(variables: list[tuple[str, dict[str, Any]]]) -> str:
    rows = [
        "| Name | Description | Type | Default | Required |",
        "|------|-------------|------|---------|:--------:|",
    ]
    for name, body in variables:
        has_default = "default" in body
        default = code(unwrap(body["default"])) if has_default else "n/a"
        type_ = code(type_text(body.get("type", "any")))
        description = cell(str(body.get("description", "")))
        rows.append(f"| {name} | {description} | {type_} | {default} | {'no' if has_default else 'yes'} |")
    return "\n".join(rows)


def outputs_table(outputs: list[tuple[str, dict[str, Any]]]) -> str:
    rows = ["| Name | Description |", "|------|-------------|"]
    rows += [f"| {name} | {cell(str(body.get('description', '')))} |" for name, body in outputs]
    return "\n".join(rows)


def render(readme_text: str) -> str:
    tables = {
        "INPUTS": inputs_table(blocks(MODULE_DIR / "variables.tf", "variable")),
        "OUTPUTS": outputs_table(blocks(MODULE_DIR / "outputs.tf", "output")),
    }
    text = readme_text
    for key, (begin, end) in MARKERS.items():
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), flags=re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"{README}: markers {begin} ... {end} not found")
        # Slicing, not pattern.sub: the tables contain backslashes that sub() would interpret.
        match = pattern.search(text)
        assert match is not None
        text = f"{text[: match.start()]}{begin}\n{tables[key]}\n{end}{text[match.end() :]}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is not up to date")
    args = parser.parse_args(argv)
    current = README.read_text(encoding="utf-8")
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"{README} is out of date: run python {Path(__file__).relative_to(MODULE_DIR.parent)}")
            return 1
        return 0
    README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
