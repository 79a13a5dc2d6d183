"""Run the real tritonserver (2.51, CPU, python backend) from the nvidia-pytriton wheel in ``.venv-triton``.

Two traps on this machine kind (see the design brief) are handled here:

- the wheel ships the python-backend stub per interpreter version under ``python_backend_stubs/3.11``; it
  must sit next to ``libtriton_python.so`` in the backend directory. We assemble a backend directory in a
  writable place (``.devstack/triton-backends``) instead of patching the venv.
- the stub must link the venv interpreter's libpython, not Debian's: ``LD_LIBRARY_PATH`` starts with that
  interpreter's ``LIBDIR`` (plus the wheel's ``nvidia_pytriton.libs``), otherwise models fail with
  ``'_thread.RLock' object has no attribute '_recursion_count'``. ``PYTHONPATH`` points at the venv's
  site-packages so model code imports numpy/onnxruntime from it.

The server gets explicit free loopback ports (gRPC, HTTP, metrics), a per-process shared-memory prefix
(several engineers' servers coexist on one host), modest CPU threads, and ``start()`` waits for server and
model readiness. ``stop()`` terminates the whole process group (the stubs are children).

What it serves is generated from model packages (``worker.runtime.model_packages``): the CPU repository
of ``models_dir`` (default ``$FLEET_MODELS_DIR``, else the packages bundled with the worker) is written
into the work dir at each launch, so the server and the worker read the same packages. An explicit
``model_repository`` (a ready Triton repository) is served as is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from worker.runtime.model_packages import loader, triton_repository
from worker.runtime.model_packages.declaration import PackageInvalid

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_TRITON_VENV = REPO_ROOT / ".venv-triton"
#: The variable naming the model packages to serve (the worker reads the same one); default: bundled.
MODELS_DIR_ENV = "FLEET_MODELS_DIR"
DEFAULT_WORK_DIR = REPO_ROOT / ".devstack"
PYTHON_VERSION = "3.11"


# Children started in this process that may outlive the object that started them (the stack keeps
# services running after ``up()`` returns). Holding the Popen here avoids "subprocess still running"
# ResourceWarnings; ``stop_process_group`` reaps and forgets them.
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class TritonError(RuntimeError):
    """tritonserver could not be located, started, or did not become ready."""


@dataclass(frozen=True)
class TritonInstall:
    """Paths inside the triton venv."""

    venv: Path
    python: Path
    site_packages: Path
    server_bin: Path
    backend_src: Path
    stub: Path
    libs_dir: Path
    libpython_dir: Path


def locate(venv: Path | str = DEFAULT_TRITON_VENV) -> TritonInstall:
    """Find tritonserver, the python backend and its stub in the venv; raise TritonError if missing."""
    venv = Path(venv).absolute()
    python = venv / "bin" / "python"
    if not python.exists():
        raise TritonError(f"{python} not found: run `make triton-venv`")
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import json, sysconfig; print(json.dumps({'purelib': sysconfig.get_paths()['purelib'],"
            " 'libdir': sysconfig.get_config_var('LIBDIR')}))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    info = json.loads(probe.stdout)
    site_packages = Path(info["purelib"])
    root = site_packages / "pytriton" / "tritonserver"
    install = TritonInstall(
        venv=venv,
        python=python,
        site_packages=site_packages,
        server_bin=root / "bin" / "tritonserver",
        backend_src=root / "backends" / "python",
        stub=root / "python_backend_stubs" / PYTHON_VERSION / "triton_python_backend_stub",
        libs_dir=site_packages / "nvidia_pytriton.libs",
        libpython_dir=Path(info["libdir"]),
    )
    for path in (install.server_bin, install.backend_src / "libtriton_python.so", install.stub):
        if not path.exists():
            raise TritonError(f"{path} not found: is nvidia-pytriton installed in {venv}?")
    return install


def prepare_backends(install: TritonInstall, work_dir: Path) -> Path:
    """Assemble ``<work_dir>/triton-backends/python`` (backend library, utils, stub); return its parent."""
    backends = work_dir / "triton-backends"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    sources = [install.stub, *sorted(p for p in install.backend_src.iterdir() if p.is_file())]
    for source in sources:
        target = python_dir / source.name
        if not target.exists() or target.stat().st_size != source.stat().st_size:
            tmp = target.with_name(target.name + f".tmp{os.getpid()}")
            shutil.copy2(source, tmp)
            tmp.replace(target)
    return backends


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (tritonserver needs explicit ports; we retry on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def triton_env(install: TritonInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    ld_paths = [str(install.libpython_dir), str(install.libs_dir)]
    if env.get("LD_LIBRARY_PATH"):
        ld_paths.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(ld_paths)
    # The stub embeds Python with an *isolated* config, so PYTHONPATH is ignored; with no program name,
    # getpath finds "python3" on PATH and, next to it, the venv's pyvenv.cfg: that makes the venv's
    # site-packages (numpy<2, onnxruntime) the stub's. PYTHONPATH stays set for tools that do honour it.
    env["PATH"] = f"{install.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env["PYTHONPATH"] = str(install.site_packages)
    env.pop("PYTHONHOME", None)
    # The machine has 2 shared cores: keep BLAS/OpenMP pools small in the stub processes.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    return env


def _get_status(url: str, timeout_s: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def resolve_models_dir(models_dir: Path | str | None = None) -> Path:
    """``models_dir``, else ``$FLEET_MODELS_DIR``, else the packages bundled with the worker."""
    return Path(models_dir or os.environ.get(MODELS_DIR_ENV) or loader.BUNDLED_MODELS_DIR).absolute()


def write_cpu_repository(models_dir: Path, repository: Path) -> list[str]:
    """Replace ``repository`` with the CPU variant of the packages in ``models_dir``; the model names.

    A bad package raises ``TritonError`` naming it (the same check the worker makes when it starts).
    """
    try:
        catalog = loader.load_packages(models_dir)
    except PackageInvalid as exc:
        raise TritonError(str(exc)) from exc
    if repository.exists():
        shutil.rmtree(repository)
    repository.mkdir(parents=True)
    triton_repository.write_repository(catalog.packages, repository, "cpu")
    return [package.name for package in catalog.packages]


class TritonServer:
    """One tritonserver process: ``start()`` (waits for readiness), ``stop()``, ports and URLs."""

    def __init__(
        self,
        *,
        model_repository: Path | str | None = None,
        models_dir: Path | str | None = None,
        models: Sequence[str] = (),
        venv: Path | str = DEFAULT_TRITON_VENV,
        work_dir: Path | str = DEFAULT_WORK_DIR,
        host: str = "127.0.0.1",
        log_path: Path | str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.work_dir = Path(work_dir).absolute()
        if model_repository is None:
            self.models_dir: Path | None = resolve_models_dir(models_dir)
            self.model_repository = self.work_dir / "model_repository"
        else:
            self.models_dir = None
            self.model_repository = Path(model_repository).absolute()
        self.models = tuple(models)
        self.venv = Path(venv)
        self.host = host
        self.log_path = Path(log_path) if log_path else self.work_dir / "tritonserver.log"
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.grpc_port = self.http_port = self.metrics_port = 0

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    def command(self, install: TritonInstall, backends: Path) -> list[str]:
        return [
            str(install.server_bin),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            f"--grpc-address={self.host}",
            f"--http-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-port={self.http_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=false",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--log-verbose=0",
            # Two servers on one host must not share python-backend shared-memory regions.
            f"--backend-config=python,shm-region-prefix-name=fleet{os.getpid()}x{self.http_port}_",
            *self.extra_args,
        ]

    def launch(self) -> None:
        """Start the process on fresh free ports without waiting (pair with ``wait_ready``)."""
        if self.process is not None:
            raise TritonError("tritonserver already started")
        if self.models_dir is not None:
            write_cpu_repository(self.models_dir, self.model_repository)
        if not self.model_repository.is_dir():
            raise TritonError(f"model repository {self.model_repository} does not exist")
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self._spawn()

    def relaunch(self, *, timeout_s: float = 180.0) -> None:
        """Start a stopped or killed server again on the ports it had (clients keep their address, as
        they would with a local server restarted by its service manager) and wait until it is ready."""
        if self.process is not None and self.process.poll() is None:
            return
        self._spawn()
        self.wait_ready(timeout_s=timeout_s)

    def _spawn(self) -> None:
        install = locate(self.venv)
        backends = prepare_backends(install, self.work_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(install, backends),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=triton_env(install),
                start_new_session=True,  # its own process group: stop() reaches the stubs too
            )
        CHILDREN[self.process.pid] = self.process

    def start(self, *, timeout_s: float = 180.0, attempts: int = 3) -> None:
        """Launch and wait until the server and every model are ready; retry on a port clash."""
        last_error = ""
        for _ in range(attempts):
            self.launch()
            try:
                self.wait_ready(timeout_s=timeout_s)
                return
            except TritonError as exc:
                last_error = str(exc)
                self.stop()
                if "Address already in use" not in self.log_tail():
                    break
        raise TritonError(f"{last_error}\n--- tritonserver log tail ---\n{self.log_tail()}")

    def model_names(self) -> list[str]:
        if self.models:
            return list(self.models)
        return sorted(
            entry.name
            for entry in self.model_repository.iterdir()
            if entry.is_dir() and (entry / "config.pbtxt").exists()
        )

    def wait_ready(self, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        base = f"http://{self.http_url}"
        pending = ["/v2/health/ready", *(f"/v2/models/{name}/ready" for name in self.model_names())]
        while pending:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise TritonError(f"tritonserver exited with code {code} before it was ready")
            if _get_status(base + pending[0]) == 200:
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise TritonError(f"tritonserver not ready after {timeout_s:.0f} s ({pending[0]})")
            time.sleep(0.2)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, *, timeout_s: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        stop_process_group(process.pid, timeout_s=timeout_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1)


def stop_process_group(pid: int, *, timeout_s: float = 15.0) -> bool:
    """SIGTERM the process group led by ``pid``, SIGKILL after ``timeout_s``; True if it was running."""
    try:
        return _stop_group(pid, timeout_s)
    finally:
        child = CHILDREN.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=2)


def _stop_group(pid: int, timeout_s: float) -> bool:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return True
        _reap(pid)
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(50):
        _reap(pid)
        if not _group_alive(pid):
            break
        time.sleep(0.1)
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies still count for killpg; treat a group whose only members are zombies as gone.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields_after = stat.rsplit(")", 1)[-1].split()
        if len(fields_after) > 3 and int(fields_after[2]) == pgid and fields_after[0] != "Z":
            return True
    return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def main(argv: Sequence[str] | None = None) -> int:
    """Foreground run for debugging: ``python -m worker.dev.devstack.tritonserver [MODEL_REPOSITORY]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    server = TritonServer(models_dir=args[0] if args else None)
    server.start()
    sys.stdout.write(json.dumps({"grpc": server.grpc_url, "http": server.http_url}) + "\n")
    sys.stdout.flush()
    try:
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
