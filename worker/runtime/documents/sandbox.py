"""Run one PDFium render in a forked child with a time and a memory bound, so no PDF can hang or sink
the process that asked.

A page's content is parsed and drawn by PDFium in C, which Python cannot interrupt, and its cost is not
known from the file: Form XObjects that draw each other ten times, twelve deep, are 10^12 draws
(PDFium stops nesting at 40 levels, but not fan-out). The child (``os.fork``: no re-import, a few ms)
gets ``RLIMIT_AS`` of its size at fork plus ``MAX_RENDER_MEMORY_BYTES`` and ``RLIMIT_CPU`` as a
backstop; the parent waits ``MAX_RENDER_SECONDS`` for its answer, then kills it and raises
``DOCUMENT_TOO_COMPLEX``. The answer (the page's pixels, or the typed error the render raised) comes
back pickled through a pipe. Linux only (the worker's platform); call it from a single-threaded
process (the preprocess pool's), as forking a threaded one is unsafe.
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import resource
import select
import signal
import time
from collections.abc import Callable
from typing import TypeVar

from worker.runtime.documents.limits import MAX_RENDER_MEMORY_BYTES, MAX_RENDER_SECONDS
from worker.shared.errors import DocumentTooComplex, DocumentUnreadable, FleetError

T = TypeVar("T")
_READ_BYTES = 1 << 20


def call_bounded(
    work: Callable[[], T], *, seconds: float = MAX_RENDER_SECONDS, memory_bytes: int = MAX_RENDER_MEMORY_BYTES
) -> T:
    """``work()`` in a forked child: its result, or its ``FleetError`` re-raised here, or
    ``DocumentTooComplex`` (past the time or memory bound), or ``DocumentUnreadable`` (any other error)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        _child(work, write_end, seconds, memory_bytes)
    os.close(write_end)
    try:
        payload = _read_until(read_end, time.monotonic() + seconds)
    finally:
        os.close(read_end)
        if payload is None:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if payload is None:
        raise DocumentTooComplex(f"the page did not render within {seconds:g} s (a PDF bomb: nested forms?)")
    if not payload:
        raise DocumentTooComplex(f"rendering the page needed more than {memory_bytes >> 20} MiB")
    ok, value = pickle.loads(payload)
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


def _child(work: Callable[[], object], write_end: int, seconds: float, memory_bytes: int) -> None:
    status = 1
    faulthandler.disable()  # PDFium aborts when the memory bound bites: the parent reports it, not a trace
    try:
        resource.setrlimit(resource.RLIMIT_AS, (_address_space() + memory_bytes, resource.RLIM_INFINITY))
        cpu = int(seconds) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        try:
            answer: tuple[bool, object] = (True, work())
        except FleetError as exc:
            answer = (False, exc)
        except MemoryError:
            raise
        except Exception as exc:  # PDFium's own failures mid-render: the page cannot be drawn
            answer = (False, DocumentUnreadable(f"the page cannot be rendered: {type(exc).__name__}: {exc}"))
        data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(data)
        while view:
            view = view[os.write(write_end, view) :]
        status = 0
    except BaseException:
        status = 1
    finally:
        os._exit(status)


def _read_until(fd: int, deadline: float) -> bytes | None:
    """Everything the child writes until it closes the pipe; ``None`` past ``deadline``."""
    parts: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return None
        part = os.read(fd, _READ_BYTES)
        if not part:
            return b"".join(parts)
        parts.append(part)


def _address_space() -> int:
    """This process's virtual size in bytes (``VmSize``), the base the child's limit adds to."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0
