"""Google's own Pub/Sub system tests against the emulator: a fidelity check (``make pubsub-fidelity``).

``tests/system.py`` ships in the google-cloud-pubsub sdist on PyPI. This module downloads the sdist of
exactly the installed client version, installs the suite's three test-only dependencies into a folder
of its own (the product venv is not touched), starts a :class:`PubSubEmulator` in this process and runs
the suite in a child pytest with ``PUBSUB_EMULATOR_HOST`` pointing at it, then prints pass/fail counts
and explains every known gap.

- The suite parametrizes most tests over ``grpc`` and ``rest`` transports. With ``PUBSUB_EMULATOR_HOST``
  set, the client library hands a gRPC channel to its REST transport and those cases fail inside the
  library before reaching any server, so this module (loaded into the child pytest as a plugin)
  deselects every case with a ``rest`` parameter.
- The suite's ``project`` fixture calls ``google.auth.default()``: a dummy ``authorized_user``
  credentials file satisfies it (the client never uses credentials against an emulator).
- Failures of :data:`KNOWN_NOT_IMPLEMENTED` cases are expected; any other failure makes the exit status 1.

Run: ``python -m worker.dev.devstack.system_tests [--work-dir DIR] [-- PYTEST_ARGS...]``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree

from worker.dev.devstack.pubsub_emulator import PubSubEmulator

if TYPE_CHECKING:
    import pytest

CLIENT_DISTRIBUTION = "google-cloud-pubsub"
# The suite imports these but the client does not depend on them; pinned to what was measured.
TEST_DEPENDENCIES = ("flaky==3.8.1", "google-cloud-testutils==1.10.1", "psutil==7.2.2")
DEFAULT_WORK_DIR = Path(".devstack") / "pubsub-system-tests"
PROJECT = "local-project"
PLUGIN_MODULE = "worker.dev.devstack.system_tests"  # not __name__: that is "__main__" under -m
DESELECTED_FILE_ENV = "FLEET_SYSTEM_TESTS_DESELECTED_FILE"
PER_TEST_TIMEOUT_S = 180  # the slowest case waits out 60 s plus flaky's reruns

_IAM = (
    "IAM is not implemented: the emulator serves google.pubsub.v1 Publisher and Subscriber only, "
    "not google.iam.v1.IAMPolicy (GetIamPolicy/SetIamPolicy answer UNIMPLEMENTED)"
)
# test function -> why it fails; it counts as known only if its failure message names UNIMPLEMENTED_MARKER,
# so a known case that breaks for another reason is reported as unexpected.
KNOWN_NOT_IMPLEMENTED: dict[str, str] = {
    "test_managing_topic_iam_policy": _IAM,
    "test_managing_subscription_iam_policy": _IAM,
}
UNIMPLEMENTED_MARKER = "MethodNotImplemented"
REST_REASON = (
    "REST transport: with PUBSUB_EMULATOR_HOST the client library hands a gRPC channel to its REST "
    "transport, so these cases fail inside the library before any request is sent"
)


@dataclass(frozen=True)
class CaseResult:
    """One test case's outcome from the JUnit report."""

    node: str  # e.g. "TestStreamingPull::test_streaming_pull_max_messages[grpc]"
    outcome: str  # passed | failed | error | skipped
    message: str = ""

    @property
    def function(self) -> str:
        return _function(self.node)

    @property
    def known_gap(self) -> bool:
        """A failure of a listed case, for the listed reason."""
        return self.function in KNOWN_NOT_IMPLEMENTED and UNIMPLEMENTED_MARKER in self.message


def _function(node: str) -> str:
    return node.rsplit("::", 1)[-1].split("[", 1)[0]


@dataclass
class Summary:
    """Counts and the explained list, as printed."""

    results: list[CaseResult]
    deselected: list[str] = field(default_factory=list)

    def of(self, outcome: str) -> list[CaseResult]:
        return [result for result in self.results if result.outcome == outcome]

    @property
    def broken(self) -> list[CaseResult]:
        return [result for result in self.results if result.outcome in ("failed", "error")]

    @property
    def known(self) -> list[CaseResult]:
        return [result for result in self.broken if result.known_gap]

    @property
    def unexpected(self) -> list[CaseResult]:
        return [result for result in self.broken if not result.known_gap]

    def lines(self, version: str) -> list[str]:
        passed, skipped = len(self.of("passed")), len(self.of("skipped"))
        out = [
            f"Google's Pub/Sub system tests (google-cloud-pubsub {version}, tests/system.py), "
            "gRPC transport, against the devstack emulator:",
            f"  passed {passed}, failed {len(self.broken)} (known not implemented {len(self.known)}, "
            f"unexpected {len(self.unexpected)}), skipped by the suite {skipped}, "
            f"deselected {len(self.deselected)} (REST transport)",
        ]
        if self.known:
            out.append("known not implemented:")
            out += [f"  {r.node}: {KNOWN_NOT_IMPLEMENTED[r.function]}" for r in self.known]
        if self.of("skipped"):
            out.append("skipped by the suite itself:")
            out += [f"  {r.node}: {r.message}" for r in self.of("skipped")]
        if self.deselected:
            out.append(f"deselected ({REST_REASON}):")
            per_function = Counter(_function(node) for node in self.deselected)
            out += [f"  {name}: {count} case(s)" for name, count in per_function.items()]
        out.append("unexpected failures:" if self.unexpected else "unexpected failures: none")
        out += [f"  {r.node} ({r.outcome}): {r.message}" for r in self.unexpected]
        out.append("passed:")
        out += [f"  {r.node}" for r in self.of("passed")]
        return out


def parse_junit(path: Path) -> list[CaseResult]:
    """Every ``testcase`` of a pytest JUnit XML report."""
    results = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        classname = case.get("classname", "").split(".")
        prefix = classname[-1] + "::" if classname and classname[-1].startswith("Test") else ""
        node = prefix + case.get("name", "")
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome = "failed" if tag == "failure" else tag
                message = ((child.get("message") or "").strip().splitlines() or [""])[0]
                break
        results.append(CaseResult(node, outcome, message))
    return results


# --- pytest plugin (loaded into the child pytest with -p) -----------------------------------------------
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect every case parametrized with the ``rest`` transport (see the module docstring)."""
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        (dropped if "rest" in params else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    record = os.environ.get(DESELECTED_FILE_ENV)
    if record:
        Path(record).write_text(json.dumps([item.nodeid.split("::", 1)[-1] for item in dropped]))


# --- preparing and running ------------------------------------------------------------------------------
def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


def fetch_suite(work_dir: Path, version: str) -> Path:
    """``tests/system.py`` of the google-cloud-pubsub ``version`` sdist, downloaded once into ``work_dir``."""
    suite = work_dir / f"suite-{version}" / "tests" / "system.py"
    if suite.exists():
        return suite
    with tempfile.TemporaryDirectory() as download:
        _pip(
            "download",
            "--no-binary",
            ":all:",
            "--no-deps",
            "--dest",
            download,
            f"{CLIENT_DISTRIBUTION}=={version}",
        )
        (sdist,) = Path(download).glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            member = next(m for m in archive.getmembers() if m.name.endswith("/tests/system.py"))
            handle = archive.extractfile(member)
            assert handle is not None, f"{member.name} is not a file"
            suite.parent.mkdir(parents=True, exist_ok=True)
            suite.write_bytes(handle.read())  # one known member, written by name: no path from the archive
    return suite


def install_test_dependencies(work_dir: Path) -> Path:
    """The suite's test-only imports, in a ``--target`` folder of their own (the venv is not modified)."""
    target = work_dir / "deps"
    stamp = target / ".installed"
    wanted = "\n".join(TEST_DEPENDENCIES)
    if not (stamp.exists() and stamp.read_text() == wanted):
        _pip("install", "--no-deps", "--upgrade", "--target", str(target), *TEST_DEPENDENCIES)
        stamp.write_text(wanted)
    return target


def write_dummy_credentials(work_dir: Path) -> Path:
    """An ``authorized_user`` file, enough for ``google.auth.default()``; never used to call Google."""
    path = work_dir / "dummy-credentials.json"
    fake = {"type": "authorized_user", "client_id": "x", "client_secret": "x", "refresh_token": "x"}
    path.write_text(json.dumps(fake))
    return path


def run_suite(work_dir: Path, pytest_args: Sequence[str] = ()) -> tuple[Summary, str]:
    """Prepare everything, run the suite's gRPC cases against a fresh emulator; (summary, version)."""
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    version = importlib.metadata.version(CLIENT_DISTRIBUTION)
    suite = fetch_suite(work_dir, version)
    deps = install_test_dependencies(work_dir)
    credentials = write_dummy_credentials(work_dir)
    ini = work_dir / "pytest.ini"  # so the project's own pytest settings (filterwarnings=error) stay out
    ini.write_text(f"[pytest]\ntimeout = {PER_TEST_TIMEOUT_S}\n")
    report, deselected_file = work_dir / "report.xml", work_dir / "deselected.json"
    report.unlink(missing_ok=True)
    deselected_file.write_text("[]")
    emulator = PubSubEmulator(admin_port=None)
    emulator.start()
    try:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(deps), os.environ.get("PYTHONPATH")])),
            "PUBSUB_EMULATOR_HOST": emulator.address,
            "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            DESELECTED_FILE_ENV: str(deselected_file),
        }
        command = [
            sys.executable, "-m", "pytest", str(suite), "-c", str(ini), "--rootdir", str(suite.parent.parent),
            "-p", "no:cacheprovider", "-p", PLUGIN_MODULE, "--junitxml", str(report), "-q", "--tb=line",
            *pytest_args,
        ]  # fmt: skip
        subprocess.run(command, env=env, check=False)
    finally:
        emulator.stop()
    if not report.exists():
        raise RuntimeError(f"pytest wrote no report ({report}); see its output above")
    return Summary(parse_junit(report), json.loads(deselected_file.read_text())), version


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="downloads, deps, report")
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = parser.parse_args(argv)
    summary, version = run_suite(args.work_dir, args.pytest_args)
    sys.stdout.write("\n".join(["", *summary.lines(version)]) + "\n")
    return 1 if summary.unexpected or not summary.of("passed") else 0


if __name__ == "__main__":
    sys.exit(main())
