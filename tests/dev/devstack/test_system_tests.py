"""The pure parts of ``make pubsub-fidelity``: the JUnit report, classifying failures, deselecting REST.

The run itself (Google's suite against the emulator, ~2 min) is ``make pubsub-fidelity``, not part of
``make test``; its measured counts are in docs/local-stack.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.dev.devstack import system_tests
from worker.dev.devstack.system_tests import CaseResult, Summary, parse_junit

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
  <testcase classname="tests.system" name="test_publish_messages[grpc]" time="0.1"/>
  <testcase classname="tests.system" name="test_managing_topic_iam_policy[grpc]" time="0.1">
    <failure message="google.api_core.exceptions.MethodNotImplemented: 501 Method not found!&#10;more"
      >x</failure>
  </testcase>
  <testcase classname="tests.system" name="test_managing_subscription_iam_policy[grpc-grpc]" time="0.1">
    <failure message="AssertionError: assert 1 == 2">x</failure>
  </testcase>
  <testcase classname="tests.system.TestStreamingPull" name="test_streaming_pull_max_messages[grpc-grpc]">
    <error message="">fixture blew up</error>
  </testcase>
  <testcase classname="tests.system.TestBasicRBAC" name="test_viewer_role_can_list_resources[grpc-grpc]">
    <skipped type="pytest.skip" message="Requires Kokoro environment">skip</skipped>
  </testcase>
</testsuite></testsuites>
"""


def test_parse_junit_reads_outcomes_classes_and_first_message_lines(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    report.write_text(REPORT)
    results = parse_junit(report)
    assert [(r.node, r.outcome) for r in results] == [
        ("test_publish_messages[grpc]", "passed"),
        ("test_managing_topic_iam_policy[grpc]", "failed"),
        ("test_managing_subscription_iam_policy[grpc-grpc]", "failed"),
        ("TestStreamingPull::test_streaming_pull_max_messages[grpc-grpc]", "error"),
        ("TestBasicRBAC::test_viewer_role_can_list_resources[grpc-grpc]", "skipped"),
    ]
    assert results[1].message == "google.api_core.exceptions.MethodNotImplemented: 501 Method not found!"
    assert results[3].function == "test_streaming_pull_max_messages"


def test_a_known_case_failing_for_another_reason_is_unexpected(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    report.write_text(REPORT)
    summary = Summary(parse_junit(report), deselected=["test_publish_messages[rest]", "test_x[grpc-rest]"])
    assert [r.node for r in summary.known] == ["test_managing_topic_iam_policy[grpc]"]
    assert [r.node for r in summary.unexpected] == [
        "test_managing_subscription_iam_policy[grpc-grpc]",  # listed, but not failing as UNIMPLEMENTED
        "TestStreamingPull::test_streaming_pull_max_messages[grpc-grpc]",
    ]
    text = "\n".join(summary.lines("9.9.9"))
    print(text)
    assert "passed 1, failed 3 (known not implemented 1, unexpected 2), skipped by the suite 1" in text
    assert "deselected 2 (REST transport)" in text
    assert "test_managing_topic_iam_policy[grpc]: IAM is not implemented" in text


class _Callspec:
    def __init__(self, **params: str) -> None:
        self.params = params


class _Item:
    def __init__(self, nodeid: str, **params: str) -> None:
        self.nodeid = nodeid
        if params:
            self.callspec = _Callspec(**params)


class _Config:
    def __init__(self) -> None:
        self.deselected: list[Any] = []
        self.hook = self

    def pytest_deselected(self, items: list[Any]) -> None:
        self.deselected.extend(items)


def test_plugin_deselects_every_case_with_a_rest_parameter(tmp_path: Path, monkeypatch: Any) -> None:
    record = tmp_path / "deselected.json"
    monkeypatch.setenv(system_tests.DESELECTED_FILE_ENV, str(record))
    items: list[Any] = [
        _Item("tests/system.py::test_large"),  # not parametrized
        _Item("tests/system.py::test_a[grpc]", publisher="grpc"),
        _Item("tests/system.py::test_a[rest]", publisher="rest"),
        _Item("tests/system.py::T::test_b[grpc-rest]", publisher="grpc", subscriber="rest"),
    ]
    config = _Config()
    system_tests.pytest_collection_modifyitems(config, items)  # type: ignore[arg-type]
    assert [item.nodeid for item in items] == ["tests/system.py::test_large", "tests/system.py::test_a[grpc]"]
    assert [item.nodeid for item in config.deselected] == [
        "tests/system.py::test_a[rest]",
        "tests/system.py::T::test_b[grpc-rest]",
    ]
    assert record.read_text() == '["test_a[rest]", "T::test_b[grpc-rest]"]'


def test_case_result_known_gap_needs_the_listed_function_and_the_marker() -> None:
    marker = system_tests.UNIMPLEMENTED_MARKER
    assert CaseResult("test_managing_topic_iam_policy[grpc]", "failed", f"x.{marker}: 501").known_gap
    assert not CaseResult("test_publish_messages[grpc]", "failed", f"x.{marker}: 501").known_gap
