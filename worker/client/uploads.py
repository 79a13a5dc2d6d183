"""Local inputs -> the inputs bucket, content-addressed: an object already there is never sent again."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.api_core import exceptions as gexc

from worker.client.connections import Connections
from worker.client.prepare import PreparedJob, Upload
from worker.client.settings import ClientSettings

UploadCallback = Callable[[int, int], None]  # (inputs in place so far, inputs in all), after each one


class InputUploader:
    """Puts each distinct local input of a submit in place, ``storage_threads`` at a time."""

    def __init__(self, settings: ClientSettings, connections: Connections) -> None:
        self._settings = settings
        self._connections = connections

    def upload(self, jobs: Sequence[PreparedJob], on_upload: UploadCallback | None = None) -> tuple[int, int]:
        """Upload the inputs of ``jobs`` that are not in the bucket yet; returns (uploaded, already there)."""
        uploads = list(
            {job.upload.object_name: job.upload for job in jobs if job.upload is not None}.values()
        )
        if not uploads:
            return 0, 0
        # The bucket before the threads: the storage client is created on first use, once.
        bucket = self._connections.storage().bucket(self._settings.input_bucket)
        uploaded = reused = 0
        with ThreadPoolExecutor(self._settings.storage_threads) as pool:
            puts = pool.map(lambda upload: _put(bucket, upload), uploads)
            for index, done_now in enumerate(puts, start=1):
                uploaded += done_now
                reused += not done_now
                if on_upload is not None:
                    on_upload(index, len(uploads))
        return uploaded, reused


def _put(bucket: Any, upload: Upload) -> bool:
    """True when this call wrote the object; False when it was there already."""
    blob = bucket.blob(upload.object_name)
    if blob.exists():
        return False
    try:
        blob.upload_from_filename(str(upload.path), if_generation_match=0)
    except gexc.PreconditionFailed:  # uploaded by a concurrent run: same name, same bytes
        return False
    return True
