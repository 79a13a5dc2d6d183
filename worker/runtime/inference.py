"""Triton adapter: readiness, batched inference over gRPC (asyncio client), checked against the package.

Every call carries a timeout. Errors leave already classified (policy.classify_inference_status):
INVALID_ARGUMENT-like statuses are the request's fault (ModelRejected, permanent); unavailability,
timeouts and "model not loaded" are InferenceUnavailable (transient). A request whose inputs reach
``shared_memory_min_bytes`` has its tensors in Triton system shared memory when Triton can map the
worker's (``shared_memory.SharedTensors``; the request itself still goes over gRPC). This module never
imports Pub/Sub.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from worker.runtime import policy
from worker.runtime.model_packages.declaration import Declaration, PackageInvalid
from worker.runtime.shared_memory import SharedTensors
from worker.runtime.telemetry import get_logger
from worker.shared import errors

log = get_logger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]


def _classify(exc: BaseException) -> errors.FleetError:
    if isinstance(exc, InferenceServerException):
        return policy.classify_inference_status(exc.status() or "UNAVAILABLE", exc.message() or "")
    return errors.InferenceUnavailable(f"triton: {type(exc).__name__}")


class TritonModel:
    """The ``Model`` port for one model package: a long-lived asyncio gRPC client to the local tritonserver.

    Every request asks for all of the package's declared outputs; the package's postprocess picks.
    """

    def __init__(
        self,
        url: str,
        declaration: Declaration,
        *,
        timeout_s: float,
        shared_memory_min_bytes: int = 0,
        requests_in_flight: int = 2,
    ) -> None:
        self._url = url
        self._declaration = declaration
        self._model = declaration.name
        self._timeout_s = timeout_s
        self._client = triton_aio.InferenceServerClient(url=url)
        self._outputs = [InferRequestedOutput(t.name) for t in declaration.outputs]
        self.version = declaration.version
        self._shared: SharedTensors | None = None
        if shared_memory_min_bytes > 0:
            names = [t.name for t in declaration.outputs]
            self._shared = SharedTensors(
                self._client,
                self._model,
                names,
                min_bytes=shared_memory_min_bytes,
                slots=requests_in_flight,
                timeout_s=timeout_s,
            )

    @property
    def name(self) -> str:
        return self._model

    async def ready(self) -> bool:
        """Model ready (false on any error; never raises)."""
        try:
            return bool(
                await asyncio.wait_for(
                    self._client.is_model_ready(self._model), timeout=min(5.0, self._timeout_s)
                )
            )
        except Exception:
            return False

    async def wait_ready(self, *, timeout_s: float) -> None:
        """Block until the model is ready, with backoff; InferenceUnavailable after ``timeout_s``.

        Then Triton's metadata must show the declared tensors: ``PackageInvalid`` names what differs; and
        shared memory is tried (off, with the reason logged, when Triton cannot map the worker's).
        """
        deadline = time.monotonic() + timeout_s
        attempt = 0
        while not await self.ready():
            attempt += 1
            if time.monotonic() >= deadline:
                raise errors.InferenceUnavailable(f"model {self._model} not ready after {timeout_s:.0f} s")
            await asyncio.sleep(policy.backoff_s(attempt, base_s=0.2, cap_s=2.0))
        await self._read_metadata()
        if self._shared is not None:
            reason = await self._shared.start()
            if reason is not None:
                log.warning(
                    "triton shared memory off: tensors go over gRPC", model=self._model, reason=reason
                )

    async def _read_metadata(self) -> None:
        try:
            metadata: Any = await asyncio.wait_for(
                self._client.get_model_metadata(self._model, as_json=True), timeout=self._timeout_s
            )
        except Exception as exc:
            raise _classify(exc) from exc
        versions = metadata.get("versions") or [self.version]
        self.version = str(versions[-1])
        check_metadata(self._declaration, metadata)

    @property
    def shared_memory(self) -> bool:
        """Whether large requests go through Triton system shared memory."""
        return self._shared is not None and self._shared.enabled

    async def infer(self, inputs: Arrays, *, interactive: bool) -> Arrays:
        """A batch of the declared inputs (batch axis first) -> every declared output, one row per item."""
        rows = len(next(iter(inputs.values())))
        # ``interactive`` decides nothing here: the batcher keeps a model instance free for it.
        if self._shared is not None:
            shared = await self._shared.infer(inputs, self._send)
            if shared is not None:
                return self._checked(shared, rows)
        tensors = []
        for spec in self._declaration.inputs:
            array = inputs[spec.name]
            tensor = InferInput(spec.name, list(array.shape), spec.dtype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = await self._send(tensors, self._outputs)
        received = {t.name: result.as_numpy(t.name) for t in self._declaration.outputs}
        return self._checked({n: a for n, a in received.items() if a is not None}, rows)

    async def _send(self, tensors: list[InferInput], outputs: list[InferRequestedOutput]) -> Any:
        try:
            return await self._client.infer(
                self._model, tensors, outputs=outputs, client_timeout=self._timeout_s
            )
        except Exception as exc:
            raise _classify(exc) from exc

    def _checked(self, received: Arrays, rows: int) -> Arrays:
        outputs: Arrays = {}
        for spec in self._declaration.outputs:
            array = received.get(spec.name)
            if array is None or len(array) != rows:
                raise errors.ModelRejected(f"triton returned no or mis-sized {spec.name} for {self._model}")
            outputs[spec.name] = array
        return outputs

    async def close(self) -> None:
        if self._shared is not None:
            await self._shared.close()
        await self._client.close()


def check_metadata(declaration: Declaration, metadata: dict[str, Any]) -> None:
    """Triton's model metadata (JSON form) must list the declared tensors; ``PackageInvalid`` otherwise."""
    for kind, declared in (("inputs", declaration.inputs), ("outputs", declaration.outputs)):
        served = {
            t.get("name"): (t.get("datatype"), [int(n) for n in t.get("shape", [])[1:]])
            for t in metadata.get(kind) or []
        }
        wanted = {t.name: (t.dtype, list(t.shape)) for t in declared}
        if served != wanted:
            raise PackageInvalid(
                declaration.name, f"Triton serves {kind} {served}, the package declares {wanted}"
            )
