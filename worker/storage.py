"""GCS adapter: read job inputs, create result objects exactly once, read an existing result.

google-cloud-storage is synchronous, so its calls run on a small fixed thread pool shared by all jobs
(never a thread per job). Library retries are off: the pipeline owns retry policy (tenacity, bounded),
and errors leave this module already classified (worker/errors.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.cloud import storage  # type: ignore[attr-defined]

from worker import errors

JSON_CONTENT_TYPE = "application/json"


def _classify(exc: Exception, what: str) -> errors.FleetError:
    if isinstance(exc, gexc.GoogleAPICallError):
        status = int(exc.code or 0)
        if status == 404:
            return errors.InputNotFound(f"{what}: not found")
        if status == 403:
            return errors.InputNotAllowed(f"{what}: access denied")
        return errors.StorageUnavailable(f"{what}: HTTP {status}")
    if isinstance(exc, requests.RequestException | ConnectionError | TimeoutError):
        return errors.StorageUnavailable(f"{what}: {type(exc).__name__}")
    return errors.StorageUnavailable(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")


class GcsStorage:
    """Inputs from any allowed bucket; results only under ``results_prefix`` of the results bucket."""

    def __init__(
        self,
        client: storage.Client,
        *,
        results_bucket: str,
        results_prefix: str,
        timeout_s: float,
        executor: concurrent.futures.Executor,
        urgent_executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self._client = client
        self._results = client.bucket(results_bucket)
        self._results_bucket = results_bucket
        self._prefix = results_prefix
        self._timeout_s = timeout_s
        self._executor = executor
        # Interactive jobs' calls do not queue behind a backlog's calls on the shared threads.
        self._urgent_executor = urgent_executor or executor
        self._buckets: dict[str, storage.Bucket] = {}

    def result_uri(self, name: str) -> str:
        return f"gs://{self._results_bucket}/{name}"

    async def _call(self, func: Any, *args: Any, urgent: bool = False) -> Any:
        executor = self._urgent_executor if urgent else self._executor
        return await asyncio.get_running_loop().run_in_executor(executor, func, *args)

    async def read_input(self, bucket: str, name: str, *, max_bytes: int, urgent: bool = False) -> bytes:
        """The object's bytes; InputTooLarge without downloading more than ``max_bytes + 1``."""
        data: bytes = await self._call(self._read_input, bucket, name, max_bytes, urgent=urgent)
        return data

    def _read_input(self, bucket: str, name: str, max_bytes: int) -> bytes:
        handle = self._buckets.get(bucket)
        if handle is None:
            handle = self._buckets[bucket] = self._client.bucket(bucket)
        try:
            # A ranged read bounds what a hostile object can make us download and hold in memory.
            data: bytes = handle.blob(name).download_as_bytes(
                start=0, end=max_bytes, timeout=self._timeout_s, checksum=None, retry=None
            )
        except Exception as exc:
            raise _classify(exc, "input") from exc
        if len(data) > max_bytes:
            raise errors.InputTooLarge(f"input is larger than {max_bytes} bytes")
        return data

    async def create_result(self, name: str, data: bytes, *, urgent: bool = False) -> bool:
        """Write ``name`` only if absent (ifGenerationMatch=0): True when created, False when it existed."""
        created: bool = await self._call(self._create_result, name, data, urgent=urgent)
        return created

    def _create_result(self, name: str, data: bytes) -> bool:
        if not name.startswith(self._prefix):
            raise ValueError(f"refusing to write outside {self._prefix!r}")
        try:
            self._results.blob(name).upload_from_string(
                data,
                content_type=JSON_CONTENT_TYPE,
                if_generation_match=0,
                timeout=self._timeout_s,
                checksum=None,
                retry=None,
            )
        except gexc.PreconditionFailed:
            return False
        except Exception as exc:
            raise _classify(exc, "result write") from exc
        return True

    async def read_result(self, name: str) -> bytes | None:
        """The existing result document, or None."""
        data: bytes | None = await self._call(self._read_result, name)
        return data

    def _read_result(self, name: str) -> bytes | None:
        try:
            data: bytes = self._results.blob(name).download_as_bytes(
                timeout=self._timeout_s, checksum=None, retry=None
            )
        except gexc.NotFound:
            return None
        except Exception as exc:
            raise _classify(exc, "result read") from exc
        return data
