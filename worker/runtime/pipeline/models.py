"""The worker's models: a ``Batcher`` per model package, and running a job's plan across them, page by page.

``ModelSet`` holds each package's ``Model`` and ``Batcher`` (micro-batches form per model; the batchers
share one ``InteractiveGate``, so interactive work stays ahead for every model) and answers readiness
for all of them (the outage monitor's view). ``ModelSet.run`` takes each analysed page of one job's
document through ``catalog.plan``, the pages side by side: steps whose needs are done run side by side
(preprocess in the pool, inference in the package's batcher, postprocess here), a dependent step after
its needs, with their outputs in ``params["needs"]`` and the page number in ``params["page"]``.

Items: the pool hands back a page's items, checked and padded to their buckets, and its context
(``handlers.Preprocessed``). Each item is submitted to the package's batcher on its own, so a fan-out
page's K items (text lines' crops) batch with other pages' and jobs' items of the same signature; the
rows come back in the items' order and postprocess gets them as the package's kind wants them
(``items.postprocess_outputs``: one dict, or a fan-out's list, ``[]`` for K = 0 with no inference at
all) with ``params["context"]`` and ``params["item_shapes"]`` (``items.postprocess_params``). One item
failing fails its job (its other items still queued are dropped); it never fails another job's items.

Blank pages (``skip_blank``: v2 jobs): each page is measured once (``documents.blank``: paper only, the
same measure whichever package decodes the page), in the decode of the first step of the plan that
decodes pages in the worker (``_measurer``). A package that skips blank pages (``[pages] blank``, the
default) waits for that measure before it submits, and on a blank page submits nothing: its analyses,
and those that need them, do not run on that page. A package that analyses blank pages never waits.
The job gets one entry per page and the per-model timings summed over its pages (``timeline.models``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from worker.runtime.documents import Frame, PageMeasure
from worker.runtime.flusher import Background
from worker.runtime.model_packages import handlers, items
from worker.runtime.model_packages.catalog import Catalog, Step
from worker.runtime.model_packages.declaration import BLANK_SKIP
from worker.runtime.model_packages.handlers import Preprocessed
from worker.runtime.model_packages.items import PageItems
from worker.runtime.pipeline.batching import Batcher, Inferred
from worker.runtime.pipeline.gate import InteractiveGate
from worker.runtime.pipeline.outage import Health
from worker.runtime.pipeline.ports import Arrays, Model
from worker.runtime.settings import WorkerSettings
from worker.shared import errors
from worker.shared.contracts import PageResult

Timing = dict[str, float]
_T = TypeVar("_T")


class Decode(Protocol):
    """``(step, input bytes, params, measure) -> (items, blank measure, frame)``: the job runner's
    preprocess (lane, pool, pacing); ``measure``: this decode measures the page."""

    def __call__(
        self, step: Step, data: bytes, params: dict[str, Any], *, measure: bool
    ) -> Awaitable[Preprocessed]: ...


@dataclass
class Ran:
    """What a job's plan produced: one entry per analysed page, per-model timings, the models used."""

    page_count: int = 1
    pages: tuple[PageResult, ...] = ()
    timings: dict[str, Timing] = field(default_factory=dict)  # per model, summed over pages
    models: dict[str, str] = field(default_factory=dict)  # name -> version, of models that inferred

    @property
    def outputs(self) -> dict[str, Any] | None:
        """The one page's outputs (a version 1 job's ``outputs``); None for several pages or none run."""
        return self.pages[0].outputs if len(self.pages) == 1 else None

    @property
    def inference_ms(self) -> float:
        return sum(t["inference_ms"] for t in self.timings.values())

    def model(self) -> dict[str, str] | None:
        """The result's ``model``: one package as is; several joined with ``+`` in plan order; None when
        no model ran (every page blank)."""
        if not self.models:
            return None
        return {"name": "+".join(self.models), "version": "+".join(self.models.values())}


@dataclass
class _PageRun:
    """One page on its way through the plan: its blank measure, once decoded; what ran, what did not."""

    number: int
    measurer: Step | None  # the step whose decode measures the page; None: the page is not measured
    measure: asyncio.Future[PageMeasure | None]
    frame: Frame | None = None  # the page's own frame, from the first decode of it
    done: dict[str, Any] = field(default_factory=dict)  # analysis -> output, asked or needed
    skipped: set[str] = field(default_factory=set)  # analyses that did not run on this blank page
    timings: dict[str, Timing] = field(default_factory=dict)
    inferred: list[str] = field(default_factory=list)  # packages, in the order their steps finished


class ModelSet:
    """Every package's model and batcher; readiness of all; a job's plan run across them."""

    def __init__(
        self,
        catalog: Catalog,
        models: Mapping[str, Model],
        health: Health,
        *,
        settings: WorkerSettings,
        gate: InteractiveGate,
    ) -> None:
        self.catalog = catalog
        self.models = dict(models)
        self.batchers = {
            package.name: Batcher(
                self.models[package.name],
                health,
                # the worker's batch, but never past what the package's engine is optimised for
                max_size=min(settings.max_batch_size, package.declaration.preferred_batch_size),
                max_delay_ms=settings.max_batch_delay_ms,
                retries=settings.transient_retries,
                batch_requests=settings.triton_batch_requests,
                gate=gate,
            )
            for package in catalog.packages
        }

    @property
    def name(self) -> str:
        """Every model's name, ``+``-joined: the ``model.name`` of results that ran no model."""
        return "+".join(self.models)

    @property
    def version(self) -> str:
        return "+".join(model.version for model in self.models.values())

    @property
    def components(self) -> tuple[Background, ...]:
        return tuple(self.batchers.values())

    async def ready(self) -> bool:
        """Every model ready (never raises)."""
        states = await asyncio.gather(*(model.ready() for model in self.models.values()))
        return all(states)

    def fail_queued(self, error: errors.FleetError) -> None:
        for batcher in self.batchers.values():
            batcher.fail_queued(error)

    async def run(
        self,
        analyses: tuple[str, ...],
        data: bytes,
        params: dict[str, Any],
        *,
        interactive: bool,
        decode: Decode,
        pages: Sequence[int] = (1,),
        page_count: int = 1,
        skip_blank: bool = False,
    ) -> Ran:
        """The asked ``analyses`` of each of ``pages``: every step of the plan, needs first, pages at once."""
        plan = self.catalog.plan(analyses)
        runs = await _all(
            self._run_page(
                plan, number, data, params, interactive=interactive, decode=decode, skip=skip_blank
            )
            for number in pages
        )
        ran = Ran(page_count=page_count)
        for name in dict.fromkeys(step.package.name for step in plan):  # plan order: model name, timeline
            for run in runs:
                if name in run.timings:
                    ran.timings[name] = _add(ran.timings.get(name), run.timings[name])
                if name in run.inferred:
                    ran.models[name] = self.models[name].version
        ran.pages = tuple(_page_result(run, analyses) for run in runs)
        return ran

    async def _run_page(
        self,
        plan: tuple[Step, ...],
        number: int,
        data: bytes,
        params: dict[str, Any],
        *,
        interactive: bool,
        decode: Decode,
        skip: bool,
    ) -> _PageRun:
        measurer = _measurer(plan, data, self.catalog) if skip else None
        run = _PageRun(number, measurer, asyncio.get_running_loop().create_future())
        if measurer is None:
            run.measure.set_result(None)
        page_params = {**params, "page": number}
        pending = list(plan)
        while pending:
            level = [
                s for s in pending if all(self._settled(run, n) for a in s.analyses for n in self._needs(a))
            ]
            if not level:  # cannot happen with a checked catalog; never loop waiting for it
                raise RuntimeError(f"no step of the plan can run on page {number}")
            pending = [s for s in pending if s not in level]
            await _all(
                self._step(step, data, page_params, run, interactive=interactive, decode=decode)
                for step in level
            )
        return run

    def _needs(self, analysis: str) -> tuple[str, ...]:
        return self.catalog.needs[analysis]

    @staticmethod
    def _settled(run: _PageRun, analysis: str) -> bool:
        return analysis in run.done or analysis in run.skipped

    async def _step(
        self,
        step: Step,
        data: bytes,
        params: dict[str, Any],
        run: _PageRun,
        *,
        interactive: bool,
        decode: Decode,
    ) -> None:
        wanted = [n for a in step.analyses for n in self._needs(a)]
        if any(n in run.skipped for n in wanted):  # a need did not run on this blank page: nor does this
            run.skipped.update(step.analyses)
            return
        needs = {n: run.done[n] for n in wanted}
        step_params = {**params, "analyses": list(step.analyses), "needs": needs}
        started = time.monotonic()
        prepared, measure, frame = await decode(step, data, step_params, measure=step is run.measurer)
        timing = {"preprocess_ms": round((time.monotonic() - started) * 1000.0, 1), "inference_ms": 0.0}
        name = step.package.name
        run.timings[name] = _add(run.timings.get(name), timing)
        if run.frame is None:
            run.frame = frame
        if step is run.measurer:
            run.measure.set_result(measure)
        declaration = step.package.declaration
        if declaration.blank_pages == BLANK_SKIP:
            # no tensor of a blank page reaches a package that skips them: wait for the page's measure
            page = await asyncio.shield(run.measure)
            if page is not None and page.blank:
                run.skipped.update(step.analyses)
                return
        rows, inference_ms = await self._infer(name, prepared, interactive=interactive)
        run.timings[name]["inference_ms"] = round(run.timings[name]["inference_ms"] + inference_ms, 1)
        outputs = items.postprocess_outputs(declaration, rows)
        post_params = items.postprocess_params(declaration, step_params, prepared)
        run.done.update(handlers.run_postprocess(step.package, outputs, post_params, step.analyses))
        run.inferred.append(name)

    async def _infer(self, name: str, page: PageItems, *, interactive: bool) -> tuple[list[Arrays], float]:
        """Each of the page's items through the package's batcher -> their rows in order, and the page's
        inference milliseconds: from the start of the first request holding one of its items to the end
        of the last (0 for a page of no items, which makes no request)."""
        batcher = self.batchers[name]
        if len(page.items) == 1:  # most pages: one item, awaited directly (no gather, no task)
            row, inference_ms, _ = await batcher.submit(page.items[0], interactive=interactive)
            return [row], inference_ms
        futures = [batcher.submit(item, interactive=interactive) for item in page.items]
        if not futures:
            return [], 0.0

        def give_up(done: asyncio.Future[Inferred]) -> None:
            # One item failed, so the job fails: its items still queued leave the queue now, before the
            # batcher forms its next request (done-callbacks run before the batcher's wake-up).
            if not done.cancelled() and done.exception() is not None:
                for future in futures:
                    future.cancel()

        for future in futures:
            future.add_done_callback(give_up)
        answered = await asyncio.gather(*futures)  # a cancelled job cancels them all
        first = min(a.started for a in answered)
        last = max(a.started + a.inference_ms / 1000.0 for a in answered)
        return [a.row for a in answered], round((last - first) * 1000.0, 1)


async def _all(coroutines: Iterable[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Every coroutine at once; the first failure cancels the others and is raised as itself."""
    pending = list(coroutines)
    if len(pending) == 1:  # one page, one step (most jobs): no task group, no task per coroutine
        return [await pending[0]]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in pending]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def _add(total: Timing | None, timing: Timing) -> Timing:
    if total is None:
        return dict(timing)
    return {key: round(total[key] + value, 1) for key, value in timing.items()}


def _measurer(plan: tuple[Step, ...], data: bytes, catalog: Catalog) -> Step | None:
    """The step whose decode measures the page: the first of the plan's first level (steps without needs,
    which run before anything is submitted) whose package decodes pages in the worker."""
    first_level = [s for s in plan if not any(catalog.needs[a] for a in s.analyses)]
    return next((s for s in first_level if handlers.measures_pages(s.package, data)), None)


def _page_result(run: _PageRun, analyses: tuple[str, ...]) -> PageResult:
    measure = run.measure.result() if run.measure.done() else None
    ran = {a: run.done[a] for a in analyses if a in run.done}
    return PageResult(
        number=run.number,
        blank=measure is not None and measure.blank,
        ink=None if measure is None else measure.content,
        paper=None if measure is None else measure.paper,
        outputs=ran or None,
        preprocess_ms=sum(t["preprocess_ms"] for t in run.timings.values()),
        inference_ms=sum(t["inference_ms"] for t in run.timings.values()),
        frame=None if run.frame is None else run.frame.to_json(),
    )
