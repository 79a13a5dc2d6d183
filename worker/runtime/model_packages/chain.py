"""A job's analyses through model packages outside the worker, fed as the worker feeds them: the chain
that ``fleet models check``, the parity gate and the engine build's reference run.

For one input and page, ``catalog.plan`` orders the steps (needs first). Each step's package gets the
params the worker builds (the job's params, ``page``, ``analyses``, and ``needs``: the answers of the
analyses it needs, from earlier steps); what its preprocess returns is checked (``items.check_prepared``:
one item or a fan-out's items, and a context); the items are padded to their buckets and grouped by
batch signature as the worker's batcher groups them, at most ``max_batch_size`` a batch, and run through
``infer`` (onnxruntime here; a candidate precision in the gate); postprocess gets the items' outputs with
the context and the items' shapes (``items.postprocess_params``). Tools call a package's ``preprocess``
with the input's bytes (a ``preprocess_page`` package gets the worker's decode of the page: loader).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.runtime.model_packages import handlers, items, parity
from worker.runtime.model_packages.catalog import Catalog, Step
from worker.runtime.model_packages.declaration import DECLARATION_FILE, PackageInvalid
from worker.runtime.model_packages.items import Arrays, PageItems
from worker.runtime.model_packages.loader import ModelPackage, load_package, load_packages
from worker.shared import errors

#: ``(package, a batch of its inputs, batch axis first) -> its outputs, batch axis first``.
Infer = Callable[[ModelPackage, Mapping[str, np.ndarray[Any, Any]]], Arrays]


@dataclass(frozen=True)
class StagePage:
    """One input's page as one package's step gets it: the params (needs included) and its items."""

    source: str
    params: dict[str, Any]
    page: PageItems


def load_chain(target: Path, models: Path | None = None) -> tuple[Catalog, ModelPackage]:
    """The package in ``target`` and the catalog it runs in: alone when none of its analyses has needs,
    else with the packages of ``models`` (default: the folder that holds ``target``), as the worker would
    load them. Raises PackageInvalid."""
    package = load_package(target)
    if models is None and not any(a.needs for a in package.declaration.analyses):
        return Catalog([package]), package
    root = models if models is not None else target.resolve().parent
    siblings = load_packages(root)
    found = siblings.by_name.get(package.name)
    if found is None or found.folder.resolve() != package.folder.resolve():
        # the target is outside ``models``: serve it with the other packages found there
        others = [p for p in siblings.packages if p.name != package.name]
        return Catalog([*others, package]), package
    return siblings, found


def load_folder(directory: Path, models: Path | None = None) -> list[tuple[Catalog, ModelPackage]]:
    """Each package to run: ``directory`` itself when it holds a ``model.toml``, else every package in it
    (one catalog for all of them, so needs resolve among them)."""
    if (directory / DECLARATION_FILE).is_file():
        return [load_chain(directory, models)]
    catalog = load_packages(directory)
    return [(catalog, package) for package in catalog.packages]


def _step_params(
    catalog: Catalog, step: Step, params: Mapping[str, Any], done: Mapping[str, Any]
) -> dict[str, Any]:
    needs = {n: done[n] for a in step.analyses for n in catalog.needs[a]}
    return {**params, "analyses": list(step.analyses), "needs": needs}


def prepare(package: ModelPackage, data: bytes, params: dict[str, Any]) -> PageItems:
    """The package's preprocess on ``data``, checked; its own failure answers MODEL_PREPROCESS_FAILED."""
    try:
        returned = package.preprocess(data, params)
    except errors.FleetError:
        raise
    except Exception as exc:
        raise errors.ModelPreprocessFailed(
            f"{package.name}: preprocess raised {type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    return items.check_prepared(package.declaration, returned)


def infer_items(package: ModelPackage, prepared: Sequence[Arrays], infer: Infer) -> list[Arrays]:
    """Each item's outputs, in order: padded to its bucket, batched with the items of its signature (at
    most ``max_batch_size`` a batch), run, split back into rows."""
    declaration = package.declaration
    padded = [items.pad_item(declaration.inputs, item) for item in prepared]
    groups: dict[items.Signature, list[int]] = {}
    for index, item in enumerate(padded):
        groups.setdefault(items.batch_signature(item), []).append(index)
    rows: dict[int, Arrays] = {}
    for indices in groups.values():
        for start in range(0, len(indices), declaration.max_batch_size):
            chunk = indices[start : start + declaration.max_batch_size]
            batch = {t.name: np.stack([padded[i][t.name] for i in chunk]) for t in declaration.inputs}
            rows.update(zip(chunk, split_rows(infer(package, batch), len(chunk)), strict=True))
    return [rows[i] for i in range(len(padded))]


def split_rows(outputs: Mapping[str, np.ndarray[Any, Any]], count: int) -> list[Arrays]:
    """A batch's outputs -> one dict per item; raises ModelRejected when an output lacks rows."""
    for name, array in outputs.items():
        if len(array) != count:
            raise errors.ModelRejected(f"output {name} has {len(array)} rows for {count} items")
    return [{name: array[row] for name, array in outputs.items()} for row in range(count)]


def one_batch(package: ModelPackage, prepared: Sequence[Arrays]) -> Arrays:
    """Every item as one batch: each input padded to one shape holding them all (``items.common_shapes``)."""
    inputs = package.declaration.inputs
    shapes = items.common_shapes(inputs, prepared)
    return {
        t.name: np.stack([items.pad_to(t, item[t.name], shapes[t.name]) for item in prepared]) for t in inputs
    }


def answer(
    package: ModelPackage,
    params: dict[str, Any],
    page: PageItems,
    rows: Sequence[Arrays],
    analyses: tuple[str, ...],
) -> dict[str, Any]:
    """The package's postprocess on one page's item outputs, as the worker calls and checks it."""
    declaration = package.declaration
    outputs = items.postprocess_outputs(declaration, rows)
    return handlers.run_postprocess(
        package, outputs, items.postprocess_params(declaration, params, page), analyses
    )


def run_plan(
    catalog: Catalog, asked: Sequence[str], data: bytes, params: Mapping[str, Any], infer: Infer
) -> dict[str, Any]:
    """The answers of ``asked`` for one input: every step of the plan, needs first (``params`` holds the
    job's params and ``page``)."""
    done: dict[str, Any] = {}
    for step in catalog.plan(asked):
        step_params = _step_params(catalog, step, params, done)
        page = prepare(step.package, data, step_params)
        rows = infer_items(step.package, page.items, infer)
        done.update(answer(step.package, step_params, page, rows, step.analyses))
    return {a: done[a] for a in asked}


def stage_page(
    catalog: Catalog, package: ModelPackage, source: Path, params: Mapping[str, Any], infer: Infer
) -> StagePage:
    """``source`` as ``package``'s step gets it: the steps it needs run with ``infer`` (the reference),
    then its own preprocess. Raises PackageInvalid when the package's analyses run in several steps."""
    analyses = tuple(a.name for a in package.declaration.analyses)
    steps = catalog.plan(analyses)
    own = [s for s in steps if s.package.name == package.name]
    if len(own) != 1:
        raise PackageInvalid(
            package.name,
            f"its analyses run in {len(own)} steps (through other packages): the parity gate "
            "judges a package's analyses in one step",
        )
    data = source.read_bytes()
    done: dict[str, Any] = {}
    for step in steps:
        step_params = _step_params(catalog, step, params, done)
        page = prepare(step.package, data, step_params)
        if step is own[0]:
            return StagePage(str(source), step_params, page)
        done.update(
            answer(
                step.package, step_params, page, infer_items(step.package, page.items, infer), step.analyses
            )
        )
    raise AssertionError("unreachable: the package's own step is in its plan")


def answers_for(
    package: ModelPackage, pages: Sequence[StagePage], rows: Sequence[Arrays], *, candidate: bool = False
) -> list[dict[str, Any]]:
    """Each page's answers from the rows of all pages' items, in order (a stage's run split back).

    ``candidate``: a page whose postprocess refuses the outputs (NaN from an overflowing precision...)
    answers nothing, so every rule on it disagrees, instead of stopping the gate.
    """
    analyses = tuple(a.name for a in package.declaration.analyses)
    out: list[dict[str, Any]] = []
    offset = 0
    for stage in pages:
        count = len(stage.page.items)
        try:
            out.append(answer(package, stage.params, stage.page, rows[offset : offset + count], analyses))
        except errors.FleetError:
            if not candidate:
                raise
            out.append({})
        offset += count
    if offset != len(rows):
        raise ValueError(f"{len(rows)} output rows for {offset} items")
    return out


def stage_run(
    package: ModelPackage, pages: Sequence[StagePage], infer: Infer, *, candidate: bool = False
) -> parity.StageRun:
    """The package's step on ``pages`` with ``infer``: each item's outputs and, when the package judges
    answers, each page's answers."""
    rows = infer_items(package, [item for p in pages for item in p.page.items], infer)
    judged = package.declaration.parity.answers is not None
    return parity.StageRun(rows, answers_for(package, pages, rows, candidate=candidate) if judged else [])


def gate_on_cpu(catalog: Catalog, package: ModelPackage, work: Path) -> parity.PrecisionDecision:
    """The parity gate without a GPU: the package's step on its reference inputs (the steps it needs run
    with the ONNX graphs), the ONNX graph as the reference and as FP32, its FP16 conversion
    (onnxconverter-common, FP32 inputs and outputs kept; ``work`` holds it) as FP16, all in onnxruntime.
    Declared precisions without a CPU stand-in (INT8, TF32) are noted in the decision, not measured."""
    from worker.runtime.model_packages import onnx_tools  # noqa: PLC0415 - the models extra

    declaration = package.declaration
    reference_infer = onnx_tools.OnnxInfer()
    pages = [
        stage_page(catalog, package, path, {"page": 1}, reference_infer)
        for path in package.reference_inputs()
    ]
    reference = stage_run(package, pages, reference_infer)

    def run(precision: str) -> parity.StageRun:
        graphs = {}
        if precision == "FP16":
            work.mkdir(parents=True, exist_ok=True)
            graphs[package.name] = onnx_tools.fp16_graph(
                package.model_path, work / f"{package.name}.fp16.onnx"
            )
        return stage_run(package, pages, onnx_tools.OnnxInfer(graphs), candidate=True)

    skipped = [p for p in declaration.parity.precisions if p not in parity.CPU_PRECISIONS]
    return parity.choose_precision(
        [p for p in declaration.parity.precisions if p in parity.CPU_PRECISIONS],
        reference=reference,
        run=run,
        tolerance=declaration.parity.max_abs_error,
        rules=declaration.parity.answers,
        notes=[f"not measured on CPU (no stand-in): {', '.join(skipped)}"] if skipped else [],
    )
