"""Parsing helpers for the infra tests: HCL (Terraform, Packer) and systemd units, no network, no tools."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
PACKER = REPO / "packer"
UNITS = PACKER / "files" / "systemd"
BIN = PACKER / "files" / "bin"
OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
SPOT_NOTICE_S = 30


@cache
def parse_hcl(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        data: dict[str, Any] = hcl2.load(handle, serialization_options=OPTIONS)
    return data


def module_files() -> list[Path]:
    return sorted(TERRAFORM.glob("*.tf"))


def blocks(kind: str, files: list[Path] | None = None) -> dict[str, dict[str, Any]]:
    """Top-level ``variable``/``output``/``locals``-free blocks by name across the module's files."""
    out: dict[str, dict[str, Any]] = {}
    for path in files or module_files():
        for block in parse_hcl(path).get(kind, []):
            out.update(block)
    return out


def resources(rtype: str) -> dict[str, dict[str, Any]]:
    """``{name: body}`` of every ``resource "<rtype>" "<name>"`` in the module."""
    out: dict[str, dict[str, Any]] = {}
    for path in module_files():
        for block in parse_hcl(path).get("resource", []):
            out.update(block.get(rtype, {}))
    return out


def all_resources() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path in module_files():
        for block in parse_hcl(path).get("resource", []):
            for rtype, named in block.items():
                found += [(rtype, name, body) for name, body in named.items()]
    return found


def locals_() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in module_files():
        for block in parse_hcl(path).get("locals", []):
            out.update(block)
    return out


def one(body: dict[str, Any], key: str) -> dict[str, Any]:
    """A nested block (python-hcl2 gives a list of one dict)."""
    value = body[key]
    assert isinstance(value, list) and len(value) == 1, f"{key}: expected one block, got {value!r}"
    item: dict[str, Any] = value[0]
    return item


def dynamic(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    for entry in body.get("dynamic", []):
        if name in entry:
            block: dict[str, Any] = entry[name]
            return block
    return None


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as ``{section: {key: [values...]}}``; joins ``\\`` continuations, skips comments."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        pending = ""
        logical.append(line)
    for line in logical:
        if not line or line.startswith(("#", ";")):
            continue
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            current = sections.setdefault(header.group(1), {})
            continue
        assert current is not None, f"{path.name}: key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    """systemd time span (``28``, ``28s``, ``1min``) in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m)?", value)
    assert match, f"unsupported time span {value!r}"
    number = float(match.group(1))
    return number * 60 if match.group(2) in ("min", "m") else number
