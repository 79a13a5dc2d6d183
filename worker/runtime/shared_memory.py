"""Triton system shared memory for large requests: their tensors travel through memory the worker and
tritonserver both map, not through gRPC.

Why (docs/performance.md "Heavy pages"): a text detector's page is a 26 MB input; sending it through
gRPC costs the worker's main process ~65-75 ms of CPU (copies into protobuf and gRPC's frames, HTTP/2
flow control), receiving its 8.8 MB map ~7 ms more, where the whole of a drawing job costs ~5 ms. Through
shared memory the request carries only where the tensors are: ~1 ms, plus one copy in and one out.

``SharedTensors`` serves one model. It has a few request slots (as many as the model has requests in
flight); a slot is an input region and an output region, POSIX shared memory (``/dev/shm``) registered
with Triton once and again after Triton lost them (a restart: the request fails, the batcher retries it,
the retry registers the slot anew). A request whose inputs reach ``min_bytes`` takes a free slot: its
inputs are copied into the input region; its outputs are written by Triton into the output region and
copied out before the slot is freed. An output's size is known only once a request of that input shape
came back, so the first request of each input shape has its outputs sent over gRPC and the next ones in
shared memory (models answer a shape with the same output sizes); should Triton still refuse an output
region, the request is sent again over gRPC and the shape is not taken again. A region grows to what a
request needs, only within what ``/dev/shm`` has free (a mapping past tmpfs' space is a SIGBUS, not an
error); otherwise, and for small requests, with no free slot or shared memory off, the request goes
over gRPC as ever.

Shared memory needs Triton on the same host and IPC namespace (on a VM: the worker's and Triton's
containers sharing ``/dev/shm``). ``start()`` registers a probe region: when Triton cannot map it, shared
memory is off for the worker's life and the reason is logged. ``close()`` unregisters and unlinks every
region. Each owner of regions holds a lock (``flock`` on ``<owner>_lock`` beside them) for its life: a
worker that starts takes the locks it can (their owners died: killed, OOM) and unlinks those owners'
regions, then unregisters from Triton every fleet region whose memory no longer exists. A lock, not a
pid, because a restarted container reuses its pids.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from multiprocessing import shared_memory
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from worker.runtime.telemetry import get_logger
from worker.shared import errors

if TYPE_CHECKING:  # Triton's client loads with SharedTensors' first request: the pool uses free_bytes only
    from tritonclient.grpc import InferInput, InferRequestedOutput, InferResult

log = get_logger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]
#: ``(inputs, outputs requested) -> Triton's result``: the adapter's one request, errors classified.
Send = Callable[[list["InferInput"], list["InferRequestedOutput"]], Awaitable["InferResult"]]

#: Prefix of every region's name (Triton's and ``/dev/shm``'s): what a starting worker may clean up.
PREFIX: Final = "fleet_"
#: Where POSIX shared memory lives on Linux; its free space bounds a region.
SHM_DIR: Final = "/dev/shm"
#: Each tensor starts at a multiple of this many bytes in its region.
ALIGN: Final = 64
#: Input shapes whose output sizes are remembered (a free-size model sees many).
LEARNED_SHAPES: Final = 256
_DTYPES: Final = {
    "FP32": np.float32,
    "FP16": np.float16,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def free_bytes(directory: str = SHM_DIR) -> int:
    """Bytes free in ``directory``'s file system (0 when it cannot be read)."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return 0
    return stat.f_bavail * stat.f_frsize


class _Region:
    """One POSIX shared-memory object, registered with Triton under its own name when ``registered``."""

    def __init__(self, name: str, size: int) -> None:
        self.memory: shared_memory.SharedMemory | None = shared_memory.SharedMemory(
            name=name, create=True, size=size
        )
        self.name = name
        self.size = size
        self.registered = False

    @property
    def key(self) -> str:
        return f"/{self.name}"

    def view(self, shape: list[int], dtype: Any, offset: int) -> np.ndarray[Any, Any]:
        if self.memory is None:
            raise errors.InferenceUnavailable(f"shared memory region {self.name} is gone")
        return np.ndarray(shape, dtype=dtype, buffer=self.memory.buf, offset=offset)

    def destroy(self) -> None:
        """Unmap and unlink (once: a second call does nothing)."""
        if self.memory is None:
            return
        self.memory.close()
        with contextlib.suppress(FileNotFoundError):
            self.memory.unlink()
        self.memory = None
        self.registered = False


class _Slot:
    """A request's regions: inputs and outputs (each made, or remade larger, when a request needs it)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inputs: _Region | None = None
        self.outputs: _Region | None = None

    def regions(self) -> list[_Region]:
        return [r for r in (self.inputs, self.outputs) if r is not None]


class SharedTensors:
    """Request slots in system shared memory for one model (module docstring); ``infer`` sends a request
    through them, or answers None to have the caller send it over gRPC."""

    def __init__(
        self,
        client: Any,
        model: str,
        outputs: Sequence[str],
        *,
        min_bytes: int,
        slots: int,
        timeout_s: float = 30.0,
    ) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._model = model
        self._names = list(outputs)  # every request asks for all of them
        self._min_bytes = min_bytes
        self._owner = f"{PREFIX}{os.getpid()}_{uuid.uuid4().hex[:8]}_{model}"
        self._free = collections.deque(_Slot(f"{self._owner}_{i}") for i in range(slots))
        self._slots = list(self._free)
        #: input shapes (no batch axis) -> each output's bytes a row; None: its regions were refused
        self._learned: collections.OrderedDict[tuple[Any, ...], dict[str, int] | None] = (
            collections.OrderedDict()
        )
        self.enabled = False
        self._lock: int | None = None  # the descriptor holding this owner's lock

    async def start(self) -> str | None:
        """Clean up dead workers' regions, probe Triton with a region of our own: None when shared memory
        works, else why not (it stays off)."""
        try:
            self._lock = _hold_lock(os.path.join(SHM_DIR, f"{self._owner}_lock"))
            _unlink_dead_owners()
            await self._forget_dead_regions()
            probe = _Region(f"{self._owner}_probe", 4096)
        except Exception as exc:
            self._release_lock()
            return f"{type(exc).__name__}: {exc}"
        try:
            await self._triton("register_system_shared_memory", probe.name, probe.key, probe.size)
            await self._triton("unregister_system_shared_memory", probe.name)
        except Exception as exc:
            self._release_lock()
            return f"Triton cannot map the worker's shared memory: {str(exc)[:200]}"
        finally:
            probe.destroy()
        self.enabled = True
        return None

    async def infer(self, inputs: Arrays, send: Send) -> Arrays | None:
        """The request through a slot: every declared output, one row per item; None: not taken (small,
        shared memory off, no free slot, no room in /dev/shm), send it over gRPC."""
        if not self.enabled or not self._free or sum(a.nbytes for a in inputs.values()) < self._min_bytes:
            return None
        slot = self._free.pop()  # the last freed: sequential requests reuse one slot's regions
        try:
            return await self._infer(slot, inputs, send)
        except BaseException:
            # The request's fate is unknown (Triton restarted, a timeout): register again before reuse.
            for region in slot.regions():
                region.registered = False
            raise
        finally:
            self._free.append(slot)

    async def close(self) -> None:
        """Unregister and unlink every region (never raises)."""
        self.enabled = False
        for slot in self._slots:
            for region in slot.regions():
                await self._drop(region)  # Triton gone: nothing of it to free
            slot.inputs = slot.outputs = None
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM_DIR, f"{self._owner}_lock"))
        os.close(self._lock)
        self._lock = None

    async def _infer(self, slot: _Slot, inputs: Arrays, send: Send) -> Arrays | None:
        rows = len(next(iter(inputs.values())))
        shape_key = tuple((name, a.shape[1:], a.dtype.str) for name, a in inputs.items())
        learned = self._learned.get(shape_key)
        input_layout = _layout({name: a.nbytes for name, a in inputs.items()})
        output_layout = _layout({n: b * rows for n, b in learned.items()}) if learned else {}
        slot.inputs = await self._fit(slot.inputs, f"{slot.name}_in", _end(input_layout))
        if slot.inputs is None:
            return None
        if output_layout:
            slot.outputs = await self._fit(slot.outputs, f"{slot.name}_out", _end(output_layout))
            if slot.outputs is None:
                output_layout = {}
        from tritonclient.grpc import InferInput  # noqa: PLC0415 - see the import at the top

        tensors = []
        for name, array in inputs.items():
            offset, size = input_layout[name]
            slot.inputs.view(list(array.shape), array.dtype, offset)[...] = array
            tensor = InferInput(name, list(array.shape), _triton_dtype(array))
            tensor.set_shared_memory(slot.inputs.name, size, offset)
            tensors.append(tensor)
        for attempt in range(3):
            try:
                result = await send(tensors, self._requested(slot, output_layout))
                break
            except Exception as exc:
                if attempt == 2 or "shared memory" not in str(exc).lower():
                    raise
                # Triton does not know a region (it restarted: register anew and send again), or, a
                # second time, refused the output region (this shape's outputs go over gRPC from now on).
                for region in slot.regions():
                    region.registered = False
                    await self._fit(region, region.name, region.size)
                if attempt == 1 and output_layout:
                    self._learn(shape_key, None)
                    output_layout = {}
        return self._outputs(slot, result, output_layout, shape_key, rows)

    def _requested(self, slot: _Slot, layout: Mapping[str, tuple[int, int]]) -> list[InferRequestedOutput]:
        from tritonclient.grpc import InferRequestedOutput  # noqa: PLC0415 - see the import at the top

        requested = []
        for name in self._names:
            output = InferRequestedOutput(name)
            if name in layout and slot.outputs is not None:
                offset, size = layout[name]
                output.set_shared_memory(slot.outputs.name, size, offset)
            requested.append(output)
        return requested

    def _outputs(
        self,
        slot: _Slot,
        result: InferResult,
        layout: Mapping[str, tuple[int, int]],
        shape_key: tuple[Any, ...],
        rows: int,
    ) -> Arrays:
        outputs: Arrays = {}
        for name in self._names:
            if name in layout and slot.outputs is not None:
                described = result.get_output(name)
                shape = [int(n) for n in described.shape]
                view = slot.outputs.view(shape, _DTYPES[described.datatype], layout[name][0])
                outputs[name] = np.array(view)  # out of the region before the slot is reused
                del view
            else:
                array = result.as_numpy(name)
                if array is None:
                    continue
                outputs[name] = array
        if not layout and shape_key not in self._learned and rows and len(outputs) == len(self._names):
            self._learn(shape_key, {name: array.nbytes // rows for name, array in outputs.items()})
        return outputs

    def _learn(self, shape_key: tuple[Any, ...], sizes: dict[str, int] | None) -> None:
        self._learned[shape_key] = sizes
        self._learned.move_to_end(shape_key)
        while len(self._learned) > LEARNED_SHAPES:
            self._learned.popitem(last=False)

    async def _fit(self, region: _Region | None, name: str, size: int) -> _Region | None:
        """``region`` when it holds ``size`` bytes and is registered; else one remade that does (None when
        /dev/shm has no room for it: the request goes over gRPC). A registration Triton refuses or does
        not answer is ``InferenceUnavailable``: the request is tried again, the region registered anew."""
        if region is not None and region.size < size:
            await self._drop(region)
            region = None
        if region is None:
            wanted = max(size, 1 << 20)
            if free_bytes() < 2 * wanted:  # leave room: a write past tmpfs' space kills the process
                return None
            region = _Region(f"{name}_{uuid.uuid4().hex[:6]}", wanted)
        if not region.registered:
            # a registration Triton still holds (it outlived our view of it) is replaced
            with contextlib.suppress(Exception):
                await self._triton("unregister_system_shared_memory", region.name)
            await self._triton("register_system_shared_memory", region.name, region.key, region.size)
            region.registered = True
        return region

    async def _drop(self, region: _Region) -> None:
        """Unregister (as far as Triton answers) and unlink a region."""
        if region.registered:
            with contextlib.suppress(Exception):
                await self._triton("unregister_system_shared_memory", region.name)
        region.destroy()

    async def _triton(self, method: str, *args: Any) -> Any:
        """One shared-memory call to Triton, within the adapter's timeout; its failure is transient."""
        try:
            return await getattr(self._client, method)(*args, client_timeout=self._timeout_s)
        except Exception as exc:
            raise errors.InferenceUnavailable(f"triton {method}: {str(exc)[:200]}") from exc

    async def _forget_dead_regions(self) -> None:
        """Unregister the fleet's regions Triton holds whose memory is gone (their worker died)."""
        status = await self._client.get_system_shared_memory_status(
            as_json=True, client_timeout=self._timeout_s
        )
        regions = status.get("regions", {})
        listed = regions.values() if isinstance(regions, dict) else regions
        for region in listed:
            name, key = str(region.get("name", "")), str(region.get("key", ""))
            if name.startswith(PREFIX) and not os.path.exists(os.path.join(SHM_DIR, key.lstrip("/"))):
                await self._triton("unregister_system_shared_memory", name)
                log.info("stale shared memory region unregistered", model=self._model, reason=name)


def _hold_lock(path: str) -> int:
    """A descriptor of ``path`` (made) holding its exclusive lock; the kernel drops it when we die."""
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    return descriptor


def _unlink_dead_owners(directory: str = SHM_DIR) -> list[str]:
    """Unlink the regions (and the lock) of every owner whose lock nobody holds; their owners' names."""
    names = os.listdir(directory)
    dead = []
    for lock in (n for n in names if n.startswith(PREFIX) and n.endswith("_lock")):
        owner = lock[: -len("_lock")]
        try:
            descriptor = os.open(os.path.join(directory, lock), os.O_RDWR)
        except FileNotFoundError:
            continue  # its owner closed meanwhile
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # alive
        finally:
            os.close(descriptor)
        for name in names:
            if name.startswith(f"{owner}_"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))
        dead.append(owner)
    return dead


def _layout(sizes: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """Each tensor's (offset, size) in a region, aligned, in order."""
    layout, offset = {}, 0
    for name, size in sizes.items():
        layout[name] = (offset, size)
        offset = _aligned(offset + size)
    return layout


def _end(layout: Mapping[str, tuple[int, int]]) -> int:
    return max((offset + size for offset, size in layout.values()), default=0)


def _triton_dtype(array: np.ndarray[Any, Any]) -> str:
    for name, dtype in _DTYPES.items():
        if array.dtype == dtype:
            return name
    raise ValueError(f"no Triton type for {array.dtype}")
