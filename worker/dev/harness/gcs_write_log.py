"""The stack's GCS emulator plus a write log: the soak's ground truth for "overwritten = 0"."""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
import urllib.request
from typing import Any

from worker.dev.devstack.admin_http import serve_admin
from worker.dev.devstack.service import announce_and_wait

#: Where a private stack (``PrivateStack``) puts the write log's URL in its environment.
WRITES_URL = "LOADGEN_WRITES_URL"


def serve_gcs_with_write_log(ready_file: str | None) -> int:
    """The stack's GCS emulator plus a write log: every stored object version, counted per object.

    The emulator enforces ``ifGenerationMatch`` but keeps no history, so an overwrite would leave no
    trace. Counting writes where the storage layer persists them (``Storage.create_file``) is the
    soak's ground truth for "overwritten = 0". Served on a second admin port at ``GET /writes``.
    """
    # Lazy: the emulator is a dev dependency, and only this sub-command needs it.
    from worker.dev.devstack.gcs_emulator import GcsEmulator  # noqa: PLC0415

    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    emulator = GcsEmulator()
    storage = emulator.state.storage
    writes: dict[str, int] = {}
    original = storage.create_file

    def create_file(bucket_name: str, file_name: str, *args: Any, **kwargs: Any) -> Any:
        result = original(bucket_name, file_name, *args, **kwargs)
        key = f"{bucket_name}/{file_name}"
        writes[key] = writes.get(key, 0) + 1
        return result

    storage.create_file = create_file

    def get_writes(body: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        prefix = query.get("prefix", "")
        with emulator.state.lock:
            return {k: v for k, v in writes.items() if k.startswith(prefix)}

    emulator.start()
    admin = serve_admin({("GET", "/writes"): get_writes})
    info = {"port": emulator.port, "writes_port": int(admin.server_address[1]), "pid": os.getpid()}
    announce_and_wait(info, ready_file, echo=False)
    admin.shutdown()
    emulator.stop()
    return 0


def object_writes(writes_url: str, prefix: str = "") -> dict[str, int]:
    """``bucket/object`` -> number of times the GCS emulator stored it (see serve_gcs_with_write_log)."""
    query = "?" + urllib.parse.urlencode({"prefix": prefix}) if prefix else ""
    with urllib.request.urlopen(writes_url.rstrip("/") + "/writes" + query, timeout=30) as response:
        data: dict[str, int] = json.loads(response.read())
    return data
