"""The worker's models: a ``Batcher`` per model package, and running a job's plan across them.

``ModelSet`` holds each package's ``Model`` and ``Batcher`` (micro-batches form per model; the batchers
share one ``InteractiveGate``, so interactive work stays ahead for every model) and answers readiness
for all of them (the outage monitor's view). ``ModelSet.run`` takes one job's input bytes through
``catalog.plan``: steps whose needs are done run side by side (preprocess in the pool, inference in the
package's batcher, postprocess here), a dependent step after its needs, with their outputs in
``params["needs"]``. The job gets one ``outputs`` document holding every asked analysis and the
per-model timings of the result's ``timeline.models``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.runtime.flusher import Background
from worker.runtime.model_packages import handlers
from worker.runtime.model_packages.catalog import Catalog, Step
from worker.runtime.pipeline.batching import Batcher
from worker.runtime.pipeline.gate import InteractiveGate
from worker.runtime.pipeline.outage import Health
from worker.runtime.pipeline.ports import Arrays, Model
from worker.runtime.settings import WorkerSettings
from worker.shared import errors

#: ``(package, input bytes, params) -> tensors``: the job runner's preprocess (lane, pool, pacing).
Decode = Callable[[Step, bytes, dict[str, Any]], Awaitable[Arrays]]


@dataclass
class Ran:
    """What a job's plan produced: the asked analyses' outputs, per-model timings, models used."""

    outputs: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)  # name -> version

    @property
    def inference_ms(self) -> float:
        return sum(t["inference_ms"] for t in self.timings.values())

    def model(self) -> dict[str, str]:
        """The result's ``model``: one package as is; several joined with ``+`` in plan order."""
        return {"name": "+".join(self.models), "version": "+".join(self.models.values())}


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
    ) -> Ran:
        """The asked ``analyses`` of one job: every step of the plan, needs first."""
        pending = list(self.catalog.plan(analyses))
        done: dict[str, Any] = {}  # analysis -> output, asked or needed
        ran = Ran()
        while pending:
            level = [s for s in pending if all(n in done for a in s.analyses for n in self._needs(a))]
            pending = [s for s in pending if s not in level]
            results = await asyncio.gather(
                *(
                    self._step(step, data, params, done, interactive=interactive, decode=decode)
                    for step in level
                )
            )
            for step, (outputs, timing) in zip(level, results, strict=True):
                done.update(outputs)
                ran.timings[step.package.name] = timing
                ran.models[step.package.name] = self.models[step.package.name].version
        ran.outputs = {a: done[a] for a in analyses}
        return ran

    def _needs(self, analysis: str) -> tuple[str, ...]:
        return self.catalog.needs[analysis]

    async def _step(
        self,
        step: Step,
        data: bytes,
        params: dict[str, Any],
        done: Mapping[str, Any],
        *,
        interactive: bool,
        decode: Decode,
    ) -> tuple[dict[str, Any], dict[str, float]]:
        needs = {n: done[n] for a in step.analyses for n in self._needs(a)}
        step_params = {**params, "analyses": list(step.analyses), "needs": needs}
        started = time.monotonic()
        inputs = await decode(step, data, step_params)
        preprocess_ms = (time.monotonic() - started) * 1000.0
        rows, inference_ms = await self.batchers[step.package.name].submit(inputs, interactive=interactive)
        outputs = handlers.run_postprocess(step.package, rows, step_params, step.analyses)
        return outputs, {"preprocess_ms": round(preprocess_ms, 1), "inference_ms": round(inference_ms, 1)}
