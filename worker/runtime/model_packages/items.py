"""What a handler's preprocess hands the worker, and the pure rules of items: checking them against the
declaration, buckets, padding, and which items may share a batch.

A page's preprocess (``preprocess_page`` or ``preprocess``) returns either one dict of tensors (one item
and no context, the original contract) or a ``Prepared``: its items and a context. A package without
``[fan_out]`` gives exactly one item per page; a fan-out package gives 0..``max_items`` (a text
recogniser: one crop per line, none on an empty page). The context (boxes, scale, the page's size:
anything picklable, it crosses the preprocess pool) comes back to postprocess in ``params["context"]``
with the items' shapes before padding in ``params["item_shapes"]``; a fan-out package's postprocess gets
the list of its items' outputs, in order, where another gets one dict (docs/models.md "Fan-out").

An item of a bucketed input goes to the smallest bucket that holds it in every dim and is padded at the
end of each axis with the input's ``pad_value``; an item larger than every bucket (within its bounds)
goes as it is. Items of equal padded shapes and dtypes (``batch_signature``) may share a batch.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from worker.runtime.model_packages.tensors import Shape, Tensor
from worker.shared import errors

if TYPE_CHECKING:
    from worker.runtime.model_packages.declaration import Declaration

Arrays = dict[str, np.ndarray[Any, Any]]
#: What may share a batch: every input's (name, padded shape, dtype), in name order.
Signature = tuple[tuple[str, Shape, str], ...]


@dataclass(frozen=True)
class Prepared:
    """A page's items for the model (each a dict of the declared inputs, no batch axis) and a context.

    ``context`` is handed to postprocess as ``params["context"]``; it must pickle (it travels from the
    preprocess process to the worker's).
    """

    items: Sequence[Mapping[str, Any]]
    context: Any = None


@dataclass(frozen=True)
class PageItems:
    """A page's items for one package, checked against its declaration, with the context.

    ``unpadded``: each item's input shapes before padding when the items are padded (``padded``); None
    when they are as preprocess made them.
    """

    items: tuple[Arrays, ...]
    context: Any = None
    unpadded: tuple[tuple[tuple[str, Shape], ...], ...] | None = None

    def shapes(self) -> list[dict[str, list[int]]]:
        """Each item's input shapes before any padding (``params["item_shapes"]``)."""
        if self.unpadded is not None:
            return [{name: list(shape) for name, shape in item} for item in self.unpadded]
        return [{name: list(array.shape) for name, array in item.items()} for item in self.items]

    def padded(self, inputs: Sequence[Tensor]) -> PageItems:
        """The items as they are batched, each padded to its bucket (``pad_item``), keeping their shapes
        before the pad for postprocess."""
        unpadded = self.unpadded
        if unpadded is None:
            unpadded = tuple(tuple((n, tuple(a.shape)) for n, a in item.items()) for item in self.items)
        return PageItems(tuple(pad_item(inputs, item) for item in self.items), self.context, unpadded)


def check_prepared(declaration: Declaration, returned: object) -> PageItems:
    """What preprocess returned -> the page's checked items and context; raises the job's error.

    Too many items is ``TooManyItems``; a free size outside its bounds ``TensorOutOfBounds``; anything
    else that differs from the declaration (not a dict or a Prepared, names, dtypes, fixed sizes, one
    item where the package has no ``[fan_out]``, a context that does not pickle) ``ModelPreprocessFailed``.
    """
    name = declaration.name
    if not isinstance(returned, Prepared):
        if not isinstance(returned, Mapping):
            raise errors.ModelPreprocessFailed(
                f"{name}: preprocess returned {type(returned).__name__}, not a dict or a Prepared"
            )
        return PageItems((check_item(declaration, returned),))
    items = returned.items
    if not isinstance(items, Sequence) or isinstance(items, str | bytes | Mapping):
        raise errors.ModelPreprocessFailed(f"{name}: Prepared.items is {type(items).__name__}, not a list")
    if declaration.max_items is None and len(items) != 1:
        raise errors.ModelPreprocessFailed(
            f"{name}: preprocess returned {len(items)} items; without [fan_out] a page gives one"
        )
    if declaration.max_items is not None and len(items) > declaration.max_items:
        raise errors.TooManyItems(
            f"{name}: preprocess returned {len(items)} items for one page; [fan_out] max_items is "
            f"{declaration.max_items}"
        )
    checked = tuple(
        check_item(declaration, item, where=f" (item {index + 1} of {len(items)})")
        for index, item in enumerate(items)
    )
    try:
        pickle.dumps(returned.context)
    except Exception as exc:
        raise errors.ModelPreprocessFailed(
            f"{name}: the context does not pickle ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    return PageItems(checked, returned.context)


def check_item(declaration: Declaration, tensors: object, *, where: str = "") -> Arrays:
    """One item: exactly the declared inputs, each a numpy array of its dtype, rank and fixed sizes, and
    its free sizes within the input's bounds."""
    name = declaration.name
    if not isinstance(tensors, Mapping):
        raise errors.ModelPreprocessFailed(
            f"{name}: preprocess returned {type(tensors).__name__}, not a dict{where}"
        )
    wanted = [t.name for t in declaration.inputs]
    if sorted(tensors) != sorted(wanted):
        raise errors.ModelPreprocessFailed(
            f"{name}: preprocess returned {sorted(tensors)}, declared {wanted}{where}"
        )
    checked: Arrays = {}
    for tensor in declaration.inputs:
        array = tensors[tensor.name]
        if not isinstance(array, np.ndarray) or array.dtype != np.dtype(tensor.numpy_dtype):
            kind = getattr(array, "dtype", type(array).__name__)
            raise errors.ModelPreprocessFailed(
                f"{name}: input {tensor.name} is {kind}, declared {tensor.dtype} "
                f"({tensor.numpy_dtype}){where}"
            )
        shape = tuple(array.shape)
        if len(shape) != len(tensor.shape) or any(
            want not in (-1, got) for want, got in zip(tensor.shape, shape, strict=True)
        ):
            raise errors.ModelPreprocessFailed(
                f"{name}: input {tensor.name} has shape {list(shape)}, declared {list(tensor.shape)}{where}"
            )
        bounds = tensor.bounds
        if bounds is not None and not bounds.holds(shape):
            raise errors.TensorOutOfBounds(
                f"{name}: input {tensor.name} has shape {list(shape)}, outside its bounds "
                f"{list(bounds.min)} .. {list(bounds.max)}{where}"
            )
        checked[tensor.name] = array
    return checked


def _fits(shape: Sequence[int], bucket: Shape) -> bool:
    return all(n <= b for n, b in zip(shape, bucket, strict=True))


def bucket_for(tensor: Tensor, shape: Sequence[int]) -> Shape | None:
    """The smallest of ``tensor``'s buckets that holds ``shape`` in every dim; None if none does."""
    return next((b for b in tensor.buckets if _fits(shape, b)), None)


def bucket_index(inputs: Sequence[Tensor], item: Mapping[str, np.ndarray[Any, Any]]) -> int | None:
    """The item's bucket: the smallest index whose bucket holds every bucketed input of the item (one
    index chooses them all); None when no input has buckets or one is larger than its largest bucket."""
    chosen = None
    for tensor in inputs:
        if not tensor.buckets:
            continue
        bucket = bucket_for(tensor, item[tensor.name].shape)
        if bucket is None:
            return None
        index = tensor.buckets.index(bucket)
        chosen = index if chosen is None else max(chosen, index)
    return chosen


def pad_to(tensor: Tensor, array: np.ndarray[Any, Any], shape: Shape) -> np.ndarray[Any, Any]:
    """``array`` padded at the end of each axis to ``shape`` with the input's ``pad_value``."""
    if tuple(array.shape) == shape:
        return array
    widths = [(0, want - got) for got, want in zip(array.shape, shape, strict=True)]
    return np.pad(array, widths, mode="constant", constant_values=tensor.pad_value)


def pad_item(inputs: Sequence[Tensor], item: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
    """The item as it is batched: each bucketed input padded to the item's bucket; an item that no
    bucket holds, and every input without buckets, as it is."""
    index = bucket_index(inputs, item)
    return {
        t.name: pad_to(t, item[t.name], t.buckets[index]) if index is not None and t.buckets else item[t.name]
        for t in inputs
    }


def batch_signature(item: Mapping[str, np.ndarray[Any, Any]]) -> Signature:
    """What a (padded) item may share a batch with: items of the same signature stack."""
    return tuple(sorted((name, tuple(array.shape), array.dtype.str) for name, array in item.items()))


def common_shapes(inputs: Sequence[Tensor], items: Sequence[Mapping[str, Any]]) -> dict[str, Shape]:
    """One shape per input that holds every item: the smallest bucket holding them all, else their
    largest size in each dim (within the bounds, as every item is). Used to run items of several sizes
    as one batch (the engine build's single trtexec run of the reference items)."""
    index = None
    if items and any(t.buckets for t in inputs):
        indices = [bucket_index(inputs, item) for item in items]
        if None not in indices:
            index = max(i for i in indices if i is not None)
    shapes = {}
    for tensor in inputs:
        if index is not None and tensor.buckets:
            shapes[tensor.name] = tensor.buckets[index]
        else:
            sizes = [tuple(item[tensor.name].shape) for item in items]
            shapes[tensor.name] = tuple(max(dims) for dims in zip(*sizes, strict=True))
    return shapes


def postprocess_outputs(declaration: Declaration, rows: Sequence[Arrays]) -> Arrays | list[Arrays]:
    """What postprocess gets as ``outputs``: the list of the items' outputs for a fan-out package, the
    one item's outputs for another."""
    if declaration.max_items is not None:
        return list(rows)
    (row,) = rows
    return row


def postprocess_params(
    declaration: Declaration, params: Mapping[str, Any], page: PageItems
) -> dict[str, Any]:
    """``params`` with what postprocess gets besides the job's: the page's ``context`` and the items'
    shapes before padding (``item_shapes``: a list for a fan-out package, the one item's for another)."""
    shapes = page.shapes()
    return {
        **params,
        "context": page.context,
        "item_shapes": shapes if declaration.max_items is not None else shapes[0],
    }
