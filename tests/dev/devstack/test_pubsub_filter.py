"""Unit tests of the subscription filter grammar (pure logic, no I/O)."""

from __future__ import annotations

import pytest

from worker.dev.devstack.pubsub_filter import FilterSyntaxError, compile_filter

CASES = [
    ('attributes.priority = "interactive"', {"priority": "interactive"}, True),
    ('attributes.priority = "interactive"', {"priority": "batch"}, False),
    ('attributes.priority = "interactive"', {}, False),
    ('NOT attributes.priority = "interactive"', {}, True),
    ('NOT attributes.priority = "interactive"', {"priority": "batch"}, True),
    ('NOT attributes.priority = "interactive"', {"priority": "interactive"}, False),
    ('attributes.priority != "interactive"', {}, True),
    ("attributes:job_id", {"job_id": ""}, True),
    ("attributes:job_id", {"other": "x"}, False),
    ('hasPrefix(attributes.job_id, "abc")', {"job_id": "abc-1"}, True),
    ('hasPrefix(attributes.job_id, "abc")', {"job_id": "xabc"}, False),
    ('hasPrefix(attributes.job_id, "abc")', {}, False),
    ('attributes:a AND (attributes.b = "1" OR attributes.b = "2")', {"a": "", "b": "2"}, True),
    ('attributes:a AND (attributes.b = "1" OR attributes.b = "2")', {"b": "2"}, False),
    ('attributes.a = "x" OR attributes.a = "y" OR attributes.a = "z"', {"a": "z"}, True),
    ("NOT (attributes:a OR attributes:b)", {"c": "1"}, True),
    ('attributes.ce-type = "dev.x"', {"ce-type": "dev.x"}, True),
    ('attributes.`odd key` = "q\\"uote"', {"odd key": 'q"uote'}, True),
    ("", {"anything": "1"}, True),
]


@pytest.mark.parametrize(("text", "attributes", "expected"), CASES)
def test_filter_matches_like_the_service(text: str, attributes: dict[str, str], expected: bool) -> None:
    assert compile_filter(text)(attributes) is expected


@pytest.mark.parametrize(
    "text",
    [
        'attributes.a = "1" AND attributes.b = "2" OR attributes.c = "3"',  # mixing needs parentheses
        "attributes.a = 1",  # values are quoted strings
        'attributes.a == "1"',
        "attributes",
        'data = "x"',  # only attributes can be filtered
        "(attributes:a",
        "hasPrefix(attributes.a)",
        "attributes:a AND",
        "x" * 300,
        'attributes.a = "1" $',
    ],
)
def test_bad_filters_are_rejected(text: str) -> None:
    with pytest.raises(FilterSyntaxError):
        compile_filter(text)
