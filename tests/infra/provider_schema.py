"""The providers' real schemas (npm `@cdktf/provider-google`, `-time`) and a check of terraform/ against them.

``@cdktf/provider-google`` 16.12.1 is generated from hashicorp/google 6.50.0 (and ``@cdktf/provider-time``
11.0.1 from hashicorp/time 0.13.1, whose ``time_sleep`` the module uses). Its ``.jsii`` manifest (99 MB)
describes, for every resource, data source and the provider itself, a config struct: each property is one
argument or nested block (camelCase; the original snake_case name is in the property's registry link),
optional or required, and a nested block's type is another struct. ``fetch`` packs the package with npm,
extracts only the ``.jsii`` and reduces it to a small JSON file under ``.tools/`` (ignored), so the check
itself runs offline. ``check`` walks every ``resource``, ``data``, ``provider`` and ``module`` block of the
module and its examples and reports what the provider (or the called module) does not know, and required
arguments that are not set. It catches what HCL parsing and checkov cannot: a misspelt argument, a block
that does not exist at that level, a resource type that is not in the provider.

Usage: ``python -m tests.infra.provider_schema fetch`` (what scripts/lint-infra runs first) and
``python -m tests.infra.provider_schema check``. A resource type is checked against the provider its name
starts with (``google_``, ``time_``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._files import REPO, TERRAFORM, parse_hcl


@dataclass(frozen=True)
class Provider:
    """A Terraform provider and the cdktf npm package generated from one version of it."""

    name: str
    package: str
    package_version: str
    provider_version: str

    @property
    def schema_file(self) -> Path:
        return REPO / ".tools" / f"provider-{self.name}" / self.package_version / "schema.json"

    @property
    def registry(self) -> str:
        return f"https://registry.terraform.io/providers/hashicorp/{self.name}/{self.provider_version}/docs"


GOOGLE = Provider("google", "@cdktf/provider-google", "16.12.1", "6.50.0")
TIME = Provider("time", "@cdktf/provider-time", "11.0.1", "0.13.1")
PROVIDERS = (GOOGLE, TIME)

PACKAGE = GOOGLE.package
PACKAGE_VERSION = GOOGLE.package_version
PROVIDER_VERSION = GOOGLE.provider_version
SCHEMA_DIR = GOOGLE.schema_file.parent
SCHEMA_FILE = GOOGLE.schema_file

# Terraform's own arguments and blocks: valid on every resource/data block, never in a provider schema.
META_ARGUMENTS = frozenset(
    {"count", "for_each", "provider", "depends_on", "lifecycle", "provisioner", "connection"}
)
MODULE_META_ARGUMENTS = frozenset({"source", "version", "count", "for_each", "providers", "depends_on"})
PROVIDER_META_ARGUMENTS = frozenset({"alias", "version"})


def _class_link(provider: Provider) -> re.Pattern[str]:
    return re.compile(re.escape(provider.registry) + r"(?:/(resources|data-sources)/(\w+))? (\w+)\}")


_PROPERTY_ANCHOR = re.compile(r"#(\w+) \w+#\w+\}")


@dataclass(frozen=True)
class Attribute:
    """One argument or nested block of a struct: required or not, and the struct of a block."""

    required: bool
    block: str | None


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def _struct_of(type_ref: dict[str, Any], types: dict[str, Any]) -> str | None:
    """The struct fqn behind a property type: a single block (fqn), or a list/set block (array of fqn)."""
    if "fqn" in type_ref:
        fqn: str = type_ref["fqn"]
        return fqn if types.get(fqn, {}).get("datatype") else None
    if "union" in type_ref:
        for member in type_ref["union"]["types"]:
            found = _struct_of(member, types)
            if found:
                return found
    if "collection" in type_ref and type_ref["collection"]["kind"] == "array":
        return _struct_of(type_ref["collection"]["elementtype"], types)
    return None


def _property_name(prop: dict[str, Any]) -> str:
    """The snake_case name Terraform uses: from the property's registry anchor, else from its camelCase."""
    docs = prop.get("docs", {})
    match = _PROPERTY_ANCHOR.search(docs.get("remarks", "") + " " + docs.get("summary", ""))
    return match.group(1) if match else _snake(prop["name"])


def reduce_manifest(manifest: dict[str, Any], provider: Provider = GOOGLE) -> dict[str, Any]:
    """The parts of a ``.jsii`` manifest the check needs: entry points and the structs they reach."""
    class_link = _class_link(provider)
    types: dict[str, Any] = manifest["types"]
    entries: dict[str, dict[str, str]] = {"resource": {}, "data": {}, "provider": {}}
    for spec in types.values():
        if spec.get("kind") != "class" or "initializer" not in spec:
            continue
        link = class_link.search(spec.get("docs", {}).get("summary", ""))
        if not link:
            continue
        params = [p for p in spec["initializer"].get("parameters", []) if p["name"] == "config"]
        if not params:
            continue
        kind = {"resources": "resource", "data-sources": "data", None: "provider"}[link.group(1)]
        name = link.group(3) if kind != "provider" else provider.name
        entries[kind][name] = params[0]["type"]["fqn"]
    structs: dict[str, dict[str, list[Any]]] = {}
    pending = [fqn for kind in entries.values() for fqn in kind.values()]
    while pending:
        fqn = pending.pop()
        if fqn in structs:
            continue
        attrs: dict[str, list[Any]] = {}
        for prop in types[fqn].get("properties", []):
            block = _struct_of(prop["type"], types)
            attrs[_property_name(prop)] = [not prop.get("optional", False), block]
            if block and block not in structs:
                pending.append(block)
        structs[fqn] = attrs
    return {
        "package": f"{provider.package}@{provider.package_version}",
        "provider": f"hashicorp/{provider.name} {provider.provider_version}",
        "resource": entries["resource"],
        "data": entries["data"],
        "provider_config": entries["provider"][provider.name],
        "structs": structs,
    }


def fetch(target: Path | None = None, *, npm: str = "npm", provider: Provider = GOOGLE) -> Path:
    """``npm pack`` the package, extract its ``.jsii`` only, keep the reduced schema at ``target``."""
    target = target or provider.schema_file
    if target.is_file():
        return target
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                npm,
                "pack",
                f"{provider.package}@{provider.package_version}",
                "--silent",
                "--pack-destination",
                tmp,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tarball = next(Path(tmp).glob("*.tgz"))
        packed_mb = tarball.stat().st_size / 1e6
        with tarfile.open(tarball) as archive:
            member = archive.extractfile("package/.jsii")
            if member is None:
                raise RuntimeError(f"{tarball.name} has no package/.jsii")
            manifest = json.load(member)
    if manifest.get("version") != provider.package_version:
        raise RuntimeError(
            f"expected {provider.package}@{provider.package_version}, got {manifest.get('version')}"
        )
    schema = reduce_manifest(manifest, provider)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".tmp")
    partial.write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True), encoding="utf-8")
    partial.replace(target)
    print(
        f"   {provider.package}@{provider.package_version}: {packed_mb:.1f} MB packed -> "
        f"{target.stat().st_size / 1e6:.1f} MB "
        f"schema ({len(schema['resource'])} resources, {len(schema['data'])} data sources) "
        f"in {time.monotonic() - started:.1f} s"
    )
    return target


def load(path: Path = SCHEMA_FILE) -> dict[str, Any]:
    """The reduced schema written by ``fetch``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -m tests.infra.provider_schema fetch`")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def load_others() -> dict[str, dict[str, Any]]:
    """The reduced schemas of the providers besides google, by the prefix of their resource types."""
    return {p.name: load(p.schema_file) for p in PROVIDERS if p is not GOOGLE}


# --- the check ---------------------------------------------------------------------------------------


def _bodies(value: Any) -> Iterator[dict[str, Any]]:
    """python-hcl2 gives a block as a list of dicts, an object attribute as a dict."""
    if isinstance(value, dict):
        yield value
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                yield item


def _dynamic_blocks(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for entry in body.get("dynamic", []):
        for name, spec in entry.items():
            content = spec.get("content", [{}])
            out[name] = content[0] if isinstance(content, list) and content else {}
    return out


def _check_struct(
    schema: dict[str, Any], fqn: str, body: dict[str, Any], where: str, *, top: bool
) -> list[str]:
    attrs: dict[str, list[Any]] = schema["structs"][fqn]
    problems: list[str] = []
    dynamic = _dynamic_blocks(body)
    for key, value in body.items():
        if key == "dynamic" or key.startswith("__") or (top and key in META_ARGUMENTS):
            continue  # python-hcl2 adds ``__comments__`` and the like
        if key not in attrs:
            problems.append(f"{where}: `{key}` is not an argument or block here")
            continue
        block = attrs[key][1]
        if block:
            for index, nested in enumerate(_bodies(value)):
                problems += _check_struct(schema, block, nested, f"{where}.{key}[{index}]", top=False)
    for key, content in dynamic.items():
        if key not in attrs or not attrs[key][1]:
            problems.append(f"{where}: dynamic `{key}` is not a nested block here")
            continue
        problems += _check_struct(schema, attrs[key][1], content, f"{where}.dynamic.{key}", top=False)
    for key, (required, _block) in sorted(attrs.items()):
        if required and key not in body and key not in dynamic:
            problems.append(f"{where}: required `{key}` is not set")
    return problems


def _variables(module_dir: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(module_dir.glob("*.tf")):
        for block in parse_hcl(path).get("variable", []):
            out.update(block)
    return out


def _check_module_call(call: dict[str, Any], caller: Path, where: str) -> list[str]:
    source = str(call.get("source", ""))
    if not source.startswith("."):
        return []  # a registry or git module: not ours to read
    variables = _variables((caller / source).resolve())
    problems = [
        f"{where}: `{key}` is not a variable of {source}"
        for key in call
        if key not in MODULE_META_ARGUMENTS and not key.startswith("__") and key not in variables
    ]
    problems += [
        f"{where}: required variable `{name}` is not set"
        for name, spec in sorted(variables.items())
        if "default" not in spec and name not in call
    ]
    return problems


def terraform_files(root: Path = TERRAFORM) -> list[Path]:
    """Every ``.tf`` of the module and its examples (not ``.terraform/`` caches)."""
    return sorted(p for p in root.rglob("*.tf") if ".terraform" not in p.parts)


def check(
    schema: dict[str, Any],
    files: list[Path] | None = None,
    *,
    others: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[str], dict[str, int]]:
    """Problems found in ``files`` (module and examples by default), and counts of what was checked.

    ``schema`` is the google provider's; ``others`` the other providers' by resource-type prefix."""
    others = others or {}
    problems: list[str] = []
    counted = {"resource": 0, "data": 0, "provider": 0, "module": 0}
    for path in files or terraform_files():
        rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        parsed = parse_hcl(path)
        for kind in ("resource", "data"):
            for block in parsed.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        counted[kind] += 1
                        where = f"{rel}: {kind} {rtype}.{name}"
                        owner = others.get(rtype.split("_", 1)[0], schema)
                        fqn = owner[kind].get(rtype)
                        if fqn is None:
                            problems.append(f"{where}: no such {kind} type in {owner['provider']}")
                            continue
                        problems += _check_struct(owner, fqn, body, where, top=True)
        for block in parsed.get("provider", []):
            for pname, body in block.items():
                counted["provider"] += 1
                if pname == "google":
                    pbody = {k: v for k, v in body.items() if k not in PROVIDER_META_ARGUMENTS}
                    problems += _check_struct(
                        schema, schema["provider_config"], pbody, f"{rel}: provider google", top=False
                    )
        for block in parsed.get("module", []):
            for mname, call in block.items():
                counted["module"] += 1
                problems += _check_module_call(call, path.parent, f"{rel}: module {mname}")
    return problems, counted


def main(argv: list[str] | None = None) -> int:
    """``fetch`` the schema (once) or ``check`` terraform/ against it; exit 1 on problems."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["fetch", "check"])
    args = parser.parse_args(argv)
    if args.command == "fetch":
        if not shutil.which("npm"):
            print("npm is needed once to fetch the provider schema (apt-get install npm)", file=sys.stderr)
            return 1
        for provider in PROVIDERS:
            fetch(provider=provider)
        return 0
    others = load_others()
    problems, counted = check(load(), others=others)
    for problem in problems:
        print(f"   {problem}", file=sys.stderr)
    summary = ", ".join(f"{n} {k}" for k, n in counted.items())
    against = ", ".join([load()["provider"], *(o["provider"] for o in others.values())])
    print(f"   {summary} checked against {against}: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
