"""A model package's declaration (``model.toml``): what the model offers and how it must be fed.

The declaration is data, read once when the worker starts; every problem is a ``PackageInvalid`` that
names the package and the field, so a bad package stops the worker instead of failing jobs. The format
is documented in docs/models.md::

    [model]
    name = "drawing_analyzer"     # the Triton model name (unique across the worker's packages)
    version = "1"
    file = "model.onnx"           # the ONNX graph (the GPU engine is built from it)
    handler = "handler.py"        # preprocess(data, params) / postprocess(outputs, params)
    max_batch_size = 32           # Triton's max_batch_size, the TensorRT profile's max
    preferred_batch_size = 16     # the batch the worker forms (TensorRT's opt shape)
    instances = 2                 # model instances: one kept free for interactive jobs

    [[inputs]]                    # without the batch axis
    name = "IMAGE"
    dtype = "FP32"
    shape = [1, 192, 192]

    [[outputs]]
    name = "CLASS_PROBS"
    dtype = "FP32"
    shape = [7]

    [[analyses]]                  # what a job's `analyses` may name
    name = "classify"
    outputs = ["CLASS_PROBS"]
    needs = []                    # analyses (of any package) that must run first

    [limits]                      # bad input is refused before it costs a GPU slot
    max_input_bytes = 33554432
    max_pixels = 40000000
    formats = ["PNG", "JPEG", "PDF"]

    [pages]                       # optional: the size a document's page is decoded at for this package
    size_px = 192                 # default: the larger of the first input's last two sizes
    blank = "skip"                # "skip" (default) or "analyse": whether it sees blank pages

    [parity]                      # the engine precision is the fastest within this tolerance
    max_abs_error = 0.001
    precisions = ["FP16", "FP32"]
    reference_inputs = ["reference/*.png"]
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

DECLARATION_FILE: Final = "model.toml"
#: Triton's names of the tensor types a package may use, with their numpy names.
DTYPES: Final[dict[str, str]] = {
    "FP32": "float32",
    "FP16": "float16",
    "INT64": "int64",
    "INT32": "int32",
    "INT8": "int8",
    "UINT8": "uint8",
    "BOOL": "bool",
}
#: Image formats a package accepts when its declaration names none.
DEFAULT_FORMATS: Final = ("PNG", "JPEG", "TIFF", "GIF", "BMP", "WEBP")
#: The page size (pixels, longer side) when the first input has no two fixed trailing sizes to derive it.
DEFAULT_PAGE_SIZE_PX: Final = 1024
#: Bounds of ``[pages] size_px``.
PAGE_SIZE_RANGE_PX: Final = (16, 8192)
#: ``[pages] blank``: a package skips blank pages (no tensor of one reaches it) or analyses them too.
BLANK_SKIP: Final = "skip"
BLANK_ANALYSE: Final = "analyse"
#: Engine precisions the parity gate can try, fastest first.
PRECISIONS: Final = ("INT8", "FP16", "TF32", "FP32")

_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
_TENSOR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")


class PackageInvalid(Exception):
    """A model package that cannot be served; the message names the package and what is wrong."""

    def __init__(self, package: str, problem: str) -> None:
        super().__init__(f"model package {package!r}: {problem}")
        self.package = package
        self.problem = problem


@dataclass(frozen=True)
class Tensor:
    """One model tensor; ``shape`` excludes the batch axis (-1 = any size)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numpy_dtype(self) -> str:
        return DTYPES[self.dtype]

    @property
    def config_dtype(self) -> str:
        """As written in a Triton ``config.pbtxt`` (``TYPE_FP32``)."""
        return f"TYPE_{self.dtype}"


@dataclass(frozen=True)
class Analysis:
    """An analysis a job may ask for: the output tensors it reads, and the analyses it needs first."""

    name: str
    outputs: tuple[str, ...]
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class InputLimits:
    """Bounds checked before decoding (bytes) and from the header (pixels, format)."""

    max_input_bytes: int
    max_pixels: int
    formats: tuple[str, ...]


@dataclass(frozen=True)
class Parity:
    """The precision gate: candidates fastest first, the tolerance, the reference inputs (globs)."""

    max_abs_error: float
    precisions: tuple[str, ...]
    reference_inputs: tuple[str, ...]


@dataclass(frozen=True)
class Declaration:
    """Everything ``model.toml`` says about one model package."""

    name: str
    version: str
    model_file: str
    handler_file: str
    max_batch_size: int
    preferred_batch_size: int
    instances: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    analyses: tuple[Analysis, ...]
    limits: InputLimits
    parity: Parity
    #: ``[pages] blank``: ``BLANK_SKIP`` (blank pages never reach it) or ``BLANK_ANALYSE``.
    blank_pages: str = BLANK_SKIP
    #: The size (pixels, a page's longer side) the worker decodes a document's page at for this package.
    page_size_px: int = DEFAULT_PAGE_SIZE_PX

    def output(self, name: str) -> Tensor:
        return next(t for t in self.outputs if t.name == name)

    def outputs_for(self, analyses: tuple[str, ...]) -> tuple[str, ...]:
        """The output tensor names that ``analyses`` (of this package) read, each once."""
        wanted = [name for a in self.analyses if a.name in analyses for name in a.outputs]
        return tuple(dict.fromkeys(wanted))


def read_declaration(folder: Path) -> Declaration:
    """Parse and check ``folder/model.toml`` (files it names must exist; tensors are checked later)."""
    package = folder.name
    path = folder / DECLARATION_FILE
    if not path.is_file():
        raise PackageInvalid(package, f"no {DECLARATION_FILE} in {folder}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PackageInvalid(package, f"{DECLARATION_FILE} does not parse: {exc}") from exc
    fields = _Fields(package, raw)
    model = fields.table("model")
    name = fields.string(model, "model.name", pattern=_NAME_RE)
    inputs = fields.tensors("inputs")
    declaration = Declaration(
        name=name,
        version=fields.string(model, "model.version", default="1"),
        model_file=fields.string(model, "model.file", default="model.onnx"),
        handler_file=fields.string(model, "model.handler", default="handler.py"),
        max_batch_size=fields.integer(model, "model.max_batch_size", default=32, low=1, high=4096),
        preferred_batch_size=fields.integer(
            model, "model.preferred_batch_size", default=16, low=1, high=4096
        ),
        instances=fields.integer(model, "model.instances", default=2, low=1, high=16),
        inputs=inputs,
        outputs=fields.tensors("outputs"),
        analyses=fields.analyses(),
        limits=fields.limits(),
        parity=fields.parity(),
        blank_pages=fields.blank_pages(),
        page_size_px=fields.page_size_px(inputs[0]),
    )
    _check_consistency(package, folder, declaration)
    return declaration


def _check_consistency(package: str, folder: Path, d: Declaration) -> None:
    if d.preferred_batch_size > d.max_batch_size:
        raise PackageInvalid(package, "model.preferred_batch_size is larger than model.max_batch_size")
    for relative in (d.model_file, d.handler_file):
        if Path(relative).is_absolute() or ".." in Path(relative).parts or not (folder / relative).is_file():
            raise PackageInvalid(package, f"{relative!r} is not a file inside the package")
    output_names = {t.name for t in d.outputs}
    for group, tensors in (("inputs", d.inputs), ("outputs", d.outputs)):
        names = [t.name for t in tensors]
        if len(set(names)) != len(names):
            raise PackageInvalid(package, f"{group} name a tensor twice")
    seen: set[str] = set()
    for analysis in d.analyses:
        if analysis.name in seen:
            raise PackageInvalid(package, f"analysis {analysis.name!r} is declared twice")
        seen.add(analysis.name)
        missing = [name for name in analysis.outputs if name not in output_names]
        if missing:
            raise PackageInvalid(package, f"analysis {analysis.name!r} reads undeclared outputs {missing}")


class _Fields:
    """Typed access to the parsed TOML; each wrong field raises PackageInvalid naming it."""

    def __init__(self, package: str, raw: dict[str, Any]) -> None:
        self.package = package
        self.raw = raw

    def fail(self, problem: str) -> PackageInvalid:
        return PackageInvalid(self.package, problem)

    def table(self, key: str) -> dict[str, Any]:
        value = self.raw.get(key)
        if not isinstance(value, dict):
            raise self.fail(f"[{key}] table is missing")
        return value

    def string(
        self,
        table: dict[str, Any],
        key: str,
        *,
        default: str | None = None,
        pattern: re.Pattern[str] | None = None,
    ) -> str:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, str) or not value:
            raise self.fail(f"{key} must be a non-empty string")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(f"{key} {value!r} must match {pattern.pattern}")
        return value

    def integer(self, table: dict[str, Any], key: str, *, default: int, low: int, high: int) -> int:
        value = table.get(key.rsplit(".", 1)[-1], default)
        if type(value) is not int or not low <= value <= high:
            raise self.fail(f"{key} must be an integer in [{low}, {high}]")
        return value

    def array(self, key: str) -> list[dict[str, Any]]:
        value = self.raw.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
            raise self.fail(f"[[{key}]] must declare at least one entry")
        return value

    def names(self, value: object, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(f"{key} must be a list of names")
        return tuple(value)

    def tensors(self, key: str) -> tuple[Tensor, ...]:
        out = []
        for index, entry in enumerate(self.array(key)):
            where = f"{key}[{index}]"
            name = self.string(entry, f"{where}.name", pattern=_TENSOR_RE)
            dtype = entry.get("dtype")
            if dtype not in DTYPES:
                raise self.fail(f"{where}.dtype must be one of {', '.join(DTYPES)}")
            shape = entry.get("shape")
            if not isinstance(shape, list) or not all(type(n) is int and (n > 0 or n == -1) for n in shape):
                raise self.fail(f"{where}.shape must be a list of positive sizes (or -1)")
            out.append(Tensor(name, dtype, tuple(shape)))
        return tuple(out)

    def analyses(self) -> tuple[Analysis, ...]:
        out = []
        for index, entry in enumerate(self.array("analyses")):
            where = f"analyses[{index}]"
            name = self.string(entry, f"{where}.name", pattern=_NAME_RE)
            outputs = self.names(entry.get("outputs"), f"{where}.outputs")
            if not outputs:
                raise self.fail(f"{where}.outputs must name at least one output tensor")
            needs = self.names(entry.get("needs", []), f"{where}.needs")
            out.append(Analysis(name, outputs, needs))
        return tuple(out)

    def limits(self) -> InputLimits:
        table = self.raw.get("limits", {})
        if not isinstance(table, dict):
            raise self.fail("[limits] must be a table")
        formats = self.names(
            table.get("formats", ["PNG", "JPEG", "TIFF", "GIF", "BMP", "WEBP"]), "limits.formats"
        )
        return InputLimits(
            max_input_bytes=self.integer(
                table, "limits.max_input_bytes", default=32 << 20, low=1, high=1 << 30
            ),
            max_pixels=self.integer(table, "limits.max_pixels", default=40_000_000, low=1, high=1 << 31),
            formats=tuple(f.upper() for f in formats),
        )

    def blank_pages(self) -> str:
        """``[pages] blank``: ``"skip"`` (default) or ``"analyse"``."""
        table = self.raw.get("pages", {})
        value = table.get("blank", BLANK_SKIP) if isinstance(table, dict) else BLANK_SKIP
        if value not in (BLANK_SKIP, BLANK_ANALYSE):
            raise self.fail(f'pages.blank must be "{BLANK_SKIP}" or "{BLANK_ANALYSE}"')
        return str(value)

    def page_size_px(self, first_input: Tensor) -> int:
        """``[pages] size_px``, else the larger of the first input's last two sizes (its image side)."""
        table = self.raw.get("pages", {})
        if not isinstance(table, dict):
            raise self.fail("[pages] must be a table")
        trailing = [n for n in first_input.shape[-2:] if n > 0] if len(first_input.shape) >= 2 else []
        derived = max(trailing) if len(trailing) == 2 else DEFAULT_PAGE_SIZE_PX
        low, high = PAGE_SIZE_RANGE_PX
        return self.integer(table, "pages.size_px", default=min(max(derived, low), high), low=low, high=high)

    def parity(self) -> Parity:
        table = self.table("parity")
        tolerance = table.get("max_abs_error")
        if not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or not tolerance > 0:
            raise self.fail("parity.max_abs_error must be a positive number")
        precisions = self.names(table.get("precisions", ["FP16", "FP32"]), "parity.precisions")
        unknown = [p for p in precisions if p not in PRECISIONS]
        if unknown or not precisions:
            raise self.fail(f"parity.precisions must be among {', '.join(PRECISIONS)}")
        references = self.names(table.get("reference_inputs"), "parity.reference_inputs")
        if not references:
            raise self.fail("parity.reference_inputs must name at least one file or glob")
        ordered = tuple(p for p in PRECISIONS if p in precisions)  # fastest first, whatever the file says
        return Parity(float(tolerance), ordered, references)
