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
    requirements = []             # PEP 508 strings the handler needs (`fleet models check` checks them)

    [model.source]                # optional: the model file is fetched, not shipped (`fleet models fetch`)
    sha256 = "..."                # the file's digest: a fetch that differs is refused, so is a load
    wheel = "name==1.0"           # a member of a PyPI wheel (pinned) ...
    member = "name/models/x.onnx"
    # url = "https://..." or "gs://bucket/object"   # ... or one URL

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
    pdf_dpi = 150                 # optional: PDF pages render at this resolution (default: 4 x size_px)
    max_side_px = 2000            # optional: the longest side a decoded page may have

    [parity]                      # the engine precision is the fastest within this tolerance
    max_abs_error = 0.001
    precisions = ["FP16", "FP32"]
    reference_inputs = ["reference/*.png"]

An input with free sizes (-1) declares its bounds (``min_shape``, ``opt_shape``, ``max_shape``) and may
declare ``buckets`` (with ``pad_value``); ``[fan_out] max_items`` lets preprocess return several items
per page; ``[parity.answers.<analysis>]`` judges engine precisions on post-processed answers instead of
raw tensors (``answers``). docs/models.md "Free sizes", "Fan-out and context" and "Parity".
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from worker.runtime.model_packages.answers import AnswerRules, RuleInvalid, parse_rules
from worker.runtime.model_packages.tensors import Tensor, TensorInvalid, parse_tensor

DECLARATION_FILE: Final = "model.toml"
#: Image formats a package accepts when its declaration names none.
DEFAULT_FORMATS: Final = ("PNG", "JPEG", "TIFF", "GIF", "BMP", "WEBP")
#: The page size (pixels, longer side) when the first input has no two fixed trailing sizes to derive it.
DEFAULT_PAGE_SIZE_PX: Final = 1024
#: Bounds of ``[pages] size_px``.
PAGE_SIZE_RANGE_PX: Final = (16, 8192)
#: Bounds of ``[pages] pdf_dpi`` (a render past ``documents.MAX_RENDER_SIDE_PX`` is smaller anyway).
PDF_DPI_RANGE: Final = (18, 1200)
#: Bounds of ``[pages] max_side_px``.
MAX_SIDE_RANGE_PX: Final = (16, 16384)
#: The keys ``[pages]`` may have.
PAGES_KEYS: Final = ("size_px", "blank", "pdf_dpi", "max_side_px")
#: ``[pages] blank``: a package skips blank pages (no tensor of one reaches it) or analyses them too.
BLANK_SKIP: Final = "skip"
BLANK_ANALYSE: Final = "analyse"
#: Engine precisions the parity gate can try, fastest first.
PRECISIONS: Final = ("INT8", "FP16", "TF32", "FP32")

#: ``[fan_out] max_items``: the most items one page may give.
MAX_FAN_OUT_ITEMS: Final = 100_000

_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: A wheel pinned to one version (``rapidocr-onnxruntime==1.4.4``): the digest pins the member, the pin
#: keeps ``pip download`` from picking a newer wheel whose member no longer matches.
_PINNED_WHEEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*")
#: URL schemes a model source may use.
SOURCE_SCHEMES: Final = ("https://", "gs://")


class PackageInvalid(Exception):
    """A model package that cannot be served; the message names the package and what is wrong."""

    def __init__(self, package: str, problem: str) -> None:
        super().__init__(f"model package {package!r}: {problem}")
        self.package = package
        self.problem = problem


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
class ModelSource:
    """Where ``fleet models fetch`` gets the model file: a wheel's member or a URL, pinned by sha256."""

    sha256: str
    #: A PyPI requirement pinned with ``==`` and the path of the file inside that wheel; or None.
    wheel: str | None = None
    member: str | None = None
    #: An ``https://`` URL or a ``gs://bucket/object``; or None.
    url: str | None = None

    def describe(self) -> str:
        """The source as a user would name it: ``wheel:member`` or the URL."""
        return f"{self.wheel}:{self.member}" if self.wheel else str(self.url)


@dataclass(frozen=True)
class Parity:
    """The precision gate: candidates fastest first, the rule, the reference inputs (globs).

    The rule is either ``max_abs_error`` on every raw output tensor or, when the package declares
    ``[parity.answers]``, its ``answers`` rules on the post-processed answers (then ``max_abs_error`` is
    None: the raw error is only recorded).
    """

    max_abs_error: float | None
    precisions: tuple[str, ...]
    reference_inputs: tuple[str, ...]
    answers: AnswerRules | None = None


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
    #: ``[pages] pdf_dpi``: PDF pages render at this resolution (None: 4 x ``page_size_px`` a longer side).
    pdf_dpi: float | None = None
    #: ``[pages] max_side_px``: the longest side of a decoded page (None: raster pages at full size).
    max_side_px: int | None = None
    #: ``[fan_out] max_items``: preprocess may return 0..max_items items per page and postprocess gets
    #: the list of their outputs; None: one item per page.
    max_items: int | None = None
    #: Where the model file is fetched from (None: it ships inside the package).
    source: ModelSource | None = None
    #: PEP 508 requirements of the handler (checked by ``fleet models check``).
    requirements: tuple[str, ...] = ()

    @property
    def fan_out(self) -> bool:
        return self.max_items is not None


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
        analyses=(analyses := fields.analyses()),
        limits=fields.limits(),
        parity=fields.parity(tuple(a.name for a in analyses)),
        blank_pages=fields.blank_pages(),
        page_size_px=fields.page_size_px(inputs[0]),
        pdf_dpi=fields.pdf_dpi(),
        max_side_px=fields.max_side_px(),
        max_items=fields.max_items(),
        source=fields.source(model),
        requirements=fields.names(model.get("requirements", []), "model.requirements"),
    )
    _check_consistency(package, folder, declaration)
    return declaration


def _check_consistency(package: str, folder: Path, d: Declaration) -> None:
    if d.preferred_batch_size > d.max_batch_size:
        raise PackageInvalid(package, "model.preferred_batch_size is larger than model.max_batch_size")
    for relative in (d.model_file, d.handler_file):
        inside = not Path(relative).is_absolute() and ".." not in Path(relative).parts
        # A fetched model file may be absent here: the loader refuses it, naming `fleet models fetch`.
        fetched = relative == d.model_file and d.source is not None
        if not inside or not (fetched or (folder / relative).is_file()):
            raise PackageInvalid(package, f"{relative!r} is not a file inside the package")
    output_names = {t.name for t in d.outputs}
    for group, tensors in (("inputs", d.inputs), ("outputs", d.outputs)):
        names = [t.name for t in tensors]
        if len(set(names)) != len(names):
            raise PackageInvalid(package, f"{group} name a tensor twice")
    bucketed = {t.name: len(t.buckets) for t in d.inputs if t.buckets}
    if len(set(bucketed.values())) > 1:
        # one bucket index chooses every bucketed input's padded shape (docs/models.md "Buckets")
        raise PackageInvalid(package, f"inputs with buckets must declare as many each: {bucketed}")
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
            try:
                out.append(parse_tensor(entry, f"{key}[{index}]", output=key == "outputs"))
            except TensorInvalid as exc:
                raise self.fail(str(exc)) from None
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
        formats = self.names(table.get("formats", list(DEFAULT_FORMATS)), "limits.formats")
        return InputLimits(
            max_input_bytes=self.integer(
                table, "limits.max_input_bytes", default=32 << 20, low=1, high=1 << 30
            ),
            max_pixels=self.integer(table, "limits.max_pixels", default=40_000_000, low=1, high=1 << 31),
            formats=tuple(f.upper() for f in formats),
        )

    def blank_pages(self) -> str:
        """``[pages] blank``: ``"skip"`` (default) or ``"analyse"``."""
        value = self.pages_table().get("blank", BLANK_SKIP)
        if value not in (BLANK_SKIP, BLANK_ANALYSE):
            raise self.fail(f'pages.blank must be "{BLANK_SKIP}" or "{BLANK_ANALYSE}"')
        return str(value)

    def pages_table(self) -> dict[str, Any]:
        """``[pages]`` (empty when absent); a key it does not know is refused, never ignored."""
        table = self.raw.get("pages", {})
        if not isinstance(table, dict):
            raise self.fail("[pages] must be a table")
        unknown = sorted(set(table) - set(PAGES_KEYS))
        if unknown:
            raise self.fail(f"[pages] has unknown keys {unknown} (it may have {', '.join(PAGES_KEYS)})")
        return table

    def pdf_dpi(self) -> float | None:
        """``[pages] pdf_dpi``: a number in ``PDF_DPI_RANGE``, or None."""
        value = self.pages_table().get("pdf_dpi")
        if value is None:
            return None
        low, high = PDF_DPI_RANGE
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise self.fail(f"pages.pdf_dpi must be a number in [{low}, {high}]")
        return float(value)

    def max_side_px(self) -> int | None:
        """``[pages] max_side_px``: an integer in ``MAX_SIDE_RANGE_PX``, or None."""
        table = self.pages_table()
        if "max_side_px" not in table:
            return None
        low, high = MAX_SIDE_RANGE_PX
        return self.integer(table, "pages.max_side_px", default=0, low=low, high=high)

    def page_size_px(self, first_input: Tensor) -> int:
        """``[pages] size_px``, else the larger of the first input's last two sizes (its image side)."""
        table = self.pages_table()
        trailing = [n for n in first_input.shape[-2:] if n > 0] if len(first_input.shape) >= 2 else []
        derived = max(trailing) if len(trailing) == 2 else DEFAULT_PAGE_SIZE_PX
        low, high = PAGE_SIZE_RANGE_PX
        return self.integer(table, "pages.size_px", default=min(max(derived, low), high), low=low, high=high)

    def source(self, model: dict[str, Any]) -> ModelSource | None:
        """``[model.source]``: sha256 and either ``wheel`` + ``member`` or ``url``; None when absent."""
        table = model.get("source")
        if table is None:
            return None
        if not isinstance(table, dict):
            raise self.fail("[model.source] must be a table")
        unknown = sorted(set(table) - {"sha256", "wheel", "member", "url"})
        if unknown:
            raise self.fail(f"model.source has unknown keys {unknown}")
        sha256 = self.string(table, "model.source.sha256", pattern=_SHA256_RE)
        if "url" in table:
            if "wheel" in table or "member" in table:
                raise self.fail("model.source names either url or wheel + member, not both")
            url = self.string(table, "model.source.url")
            host, _, path = url.partition("://")[2].partition("/")
            if not url.startswith(SOURCE_SCHEMES) or not host or (url.startswith("gs://") and not path):
                raise self.fail(
                    f"model.source.url must start with {' or '.join(SOURCE_SCHEMES)} and name a host "
                    "(gs://BUCKET/OBJECT)"
                )
            return ModelSource(sha256, url=url)
        if "wheel" not in table or "member" not in table:
            raise self.fail("model.source needs url, or wheel and member")
        wheel = self.string(table, "model.source.wheel")
        if not _PINNED_WHEEL_RE.fullmatch(wheel):
            raise self.fail(f"model.source.wheel {wheel!r} must pin one version (name==version)")
        return ModelSource(sha256, wheel=wheel, member=self.string(table, "model.source.member"))

    def max_items(self) -> int | None:
        """``[fan_out] max_items``, or None without a ``[fan_out]`` table."""
        table = self.raw.get("fan_out")
        if table is None:
            return None
        if not isinstance(table, dict) or "max_items" not in table:
            raise self.fail("[fan_out] must be a table with max_items")
        return self.integer(table, "fan_out.max_items", default=0, low=1, high=MAX_FAN_OUT_ITEMS)

    def parity(self, analyses: tuple[str, ...]) -> Parity:
        table = self.table("parity")
        answers = None
        if "answers" in table:
            try:
                answers = parse_rules(table["answers"], analyses)
            except RuleInvalid as exc:
                raise self.fail(str(exc)) from None
        tolerance = table.get("max_abs_error")
        if answers is not None and tolerance is not None:
            raise self.fail(
                "parity declares max_abs_error and [parity.answers]: judge raw tensors or answers, not both"
            )
        if answers is None and (
            not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or not tolerance > 0
        ):
            raise self.fail("parity.max_abs_error must be a positive number (or declare [parity.answers])")
        precisions = self.names(table.get("precisions", ["FP16", "FP32"]), "parity.precisions")
        unknown = [p for p in precisions if p not in PRECISIONS]
        if unknown or not precisions:
            raise self.fail(f"parity.precisions must be among {', '.join(PRECISIONS)}")
        references = self.names(table.get("reference_inputs"), "parity.reference_inputs")
        if not references:
            raise self.fail("parity.reference_inputs must name at least one file or glob")
        ordered = tuple(p for p in PRECISIONS if p in precisions)  # fastest first, whatever the file says
        return Parity(None if tolerance is None else float(tolerance), ordered, references, answers)
