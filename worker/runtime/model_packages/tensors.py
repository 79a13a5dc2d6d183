"""A package's tensors as ``model.toml`` declares them: name, dtype, shape, and an input's bounds and buckets.

A shape excludes the batch axis; -1 is a free size. An input with a free size declares its bounds::

    [[inputs]]
    name = "x"
    dtype = "FP32"
    shape = [3, 48, -1]
    min_shape = [3, 48, 16]        # smallest accepted (fixed dims repeat their size)
    opt_shape = [3, 48, 320]       # TensorRT's optimum (default: max_shape)
    max_shape = [3, 48, 2048]
    buckets = [[3, 48, 160], [3, 48, 320], [3, 48, 640]]   # optional, smallest first
    pad_value = 0.0                # optional, with buckets

The checks here are those of one tensor (``TensorInvalid`` names the field); what concerns several
tensors (names unique, buckets declared alike) is the declaration's. What an item does with the bounds
and buckets at run time is ``items``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

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
#: The largest size of one dimension (TensorRT and Triton dims are 32-bit).
MAX_DIM: Final = 2**31 - 1
#: TensorRT's most dimensions of a tensor (``Dims::MAX_DIMS``), the batch axis included.
MAX_RANK: Final = 8
#: Tensor names as ONNX graphs have them (``x``, ``save_infer_model/scale_0.tmp_1``, ``input:0``): any
#: printable ASCII but space and the characters that cannot travel where a name goes — ``,`` and ``'``
#: (trtexec splits ``--shapes``/``--loadInputs`` lists on commas and quotes names with ``'``), ``"`` and
#: ``\`` (config.pbtxt strings).
TENSOR_NAME_RE: Final = re.compile(r"[!#-&(-+\--\[\]-~]{1,255}")

_INPUT_ONLY: Final = ("min_shape", "opt_shape", "max_shape", "buckets", "pad_value")

Shape = tuple[int, ...]


class TensorInvalid(ValueError):
    """A ``[[inputs]]``/``[[outputs]]`` entry that cannot be served; the message names the field."""


@dataclass(frozen=True)
class Bounds:
    """An input's accepted sizes: every dim of an item lies in ``[min, max]``; ``opt`` is TensorRT's
    optimum. Fixed dims repeat their size (a fixed-shape input's bounds are its shape three times)."""

    min: Shape
    opt: Shape
    max: Shape

    def holds(self, shape: Shape) -> bool:
        return len(shape) == len(self.min) and all(
            low <= n <= high for low, n, high in zip(self.min, shape, self.max, strict=True)
        )


@dataclass(frozen=True)
class Tensor:
    """One model tensor; ``shape`` excludes the batch axis (-1 = any size).

    Inputs carry their ``bounds`` (None for outputs), their ``buckets`` (padded shapes an item is
    rounded up to, smallest first; empty: items go as they are) and the ``pad_value`` of the padding.
    """

    name: str
    dtype: str
    shape: Shape
    bounds: Bounds | None = None
    buckets: tuple[Shape, ...] = ()
    pad_value: float = 0.0

    @property
    def free(self) -> bool:
        """Whether a dim has no fixed size (-1)."""
        return -1 in self.shape

    @property
    def numpy_dtype(self) -> str:
        return DTYPES[self.dtype]

    @property
    def config_dtype(self) -> str:
        """As written in a Triton ``config.pbtxt`` (``TYPE_FP32``)."""
        return f"TYPE_{self.dtype}"


def parse_tensor(entry: dict[str, Any], where: str, *, output: bool) -> Tensor:
    """One ``[[inputs]]`` (``output`` False) or ``[[outputs]]`` entry, checked."""
    name = entry.get("name")
    if not isinstance(name, str) or not TENSOR_NAME_RE.fullmatch(name):
        raise TensorInvalid(
            f"{where}.name must be 1-255 printable ASCII characters without space, comma, quotes or "
            f"backslash (got {name!r})"
        )
    dtype = entry.get("dtype")
    if dtype not in DTYPES:
        raise TensorInvalid(f"{where}.dtype must be one of {', '.join(DTYPES)}")
    shape = _shape(entry.get("shape"), f"{where}.shape", free=True)
    if len(shape) >= MAX_RANK:
        raise TensorInvalid(f"{where}.shape has {len(shape)} dims; at most {MAX_RANK - 1} besides the batch")
    if output:
        extra = [k for k in _INPUT_ONLY if k in entry]
        if extra:
            raise TensorInvalid(f"{where} declares {extra}: bounds and buckets are an input's")
        return Tensor(name, dtype, shape)
    bounds = _bounds(entry, where, shape)
    buckets = _buckets(entry, where, shape, bounds)
    pad_value = entry.get("pad_value", 0.0)
    if "pad_value" in entry and not buckets:
        raise TensorInvalid(f"{where}.pad_value needs buckets (only a bucketed input is padded)")
    if isinstance(pad_value, bool) or not isinstance(pad_value, int | float):
        raise TensorInvalid(f"{where}.pad_value must be a number")
    return Tensor(name, dtype, shape, bounds, buckets, float(pad_value))


def _shape(value: object, where: str, *, free: bool = False) -> Shape:
    """A list of sizes (``free``: -1 allowed), each at most MAX_DIM."""
    if not isinstance(value, list) or not all(
        type(n) is int and (0 < n <= MAX_DIM or (free and n == -1)) for n in value
    ):
        wanted = "positive sizes (or -1)" if free else "positive sizes"
        raise TensorInvalid(f"{where} must be a list of {wanted}")
    return tuple(value)


def _sized_like(value: object, where: str, shape: Shape) -> Shape:
    """A concrete shape of ``shape``'s rank that repeats its fixed dims."""
    concrete = _shape(value, where)
    if len(concrete) != len(shape) or any(
        want not in (-1, got) for want, got in zip(shape, concrete, strict=True)
    ):
        raise TensorInvalid(
            f"{where} {list(concrete)} must have the rank and the fixed sizes of shape {list(shape)}"
        )
    return concrete


def _bounds(entry: dict[str, Any], where: str, shape: Shape) -> Bounds:
    """min/opt/max of an input: required with a -1 dim (opt defaults to max); else the shape itself."""
    given = [k for k in ("min_shape", "opt_shape", "max_shape") if k in entry]
    if -1 not in shape:
        if given:
            raise TensorInvalid(f"{where} declares {given} but its shape has no -1 dim")
        return Bounds(shape, shape, shape)
    if "min_shape" not in entry or "max_shape" not in entry:
        raise TensorInvalid(
            f"{where}.shape {list(shape)} has free dims: declare min_shape and max_shape (and opt_shape, "
            "default max_shape)"
        )
    low = _sized_like(entry["min_shape"], f"{where}.min_shape", shape)
    high = _sized_like(entry["max_shape"], f"{where}.max_shape", shape)
    opt = _sized_like(entry.get("opt_shape", list(high)), f"{where}.opt_shape", shape)
    if not all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)):
        raise TensorInvalid(
            f"{where} needs min_shape <= opt_shape <= max_shape in every dim: "
            f"{list(low)}, {list(opt)}, {list(high)}"
        )
    return Bounds(low, opt, high)


def _buckets(entry: dict[str, Any], where: str, shape: Shape, bounds: Bounds) -> tuple[Shape, ...]:
    """Padded shapes within the bounds, each at least the one before in every dim, and larger in one."""
    raw = entry.get("buckets")
    if raw is None:
        return ()
    if -1 not in shape:
        raise TensorInvalid(f"{where}.buckets needs a -1 dim in shape")
    if not isinstance(raw, list) or not raw:
        raise TensorInvalid(f"{where}.buckets must be a non-empty list of shapes")
    buckets = tuple(_sized_like(b, f"{where}.buckets[{i}]", shape) for i, b in enumerate(raw))
    for i, bucket in enumerate(buckets):
        if not bounds.holds(bucket):
            raise TensorInvalid(
                f"{where}.buckets[{i}] {list(bucket)} is outside min_shape {list(bounds.min)} .. "
                f"max_shape {list(bounds.max)}"
            )
        before = buckets[i - 1] if i else None
        if before is not None and (
            bucket == before or any(a < b for a, b in zip(bucket, before, strict=True))
        ):
            raise TensorInvalid(
                f"{where}.buckets must grow: {list(bucket)} after {list(before)} (each bucket at least as "
                "large as the one before in every dim)"
            )
    return buckets
