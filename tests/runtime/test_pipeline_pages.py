"""Pages through the pipeline, with in-memory fakes (pure orchestration): which pages run, the blank
short-cut before any inference, version 1's refusal of several pages, lanes, and the result's shape
checked against the JSON Schemas. The real decoders and models on the real stack:
tests/runtime/test_pages_integration.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import pytest

from worker.shared import contracts

from .test_pipeline import World as PipelineWorld
from .worker_fakes import PAGED, FakePreprocessor, delivery

DOCUMENT = "in/set.tif"


def job(job_id: str, uri: str = f"gs://inputs/{DOCUMENT}", **extra: Any) -> dict[str, Any]:
    return {"job_id": job_id, "input_uri": uri, **extra}


class World(PipelineWorld):
    """The pipeline over the fakes; ``pages`` is the document at ``DOCUMENT`` (a character per page)."""

    def __init__(self, pages: bytes = b"x.x") -> None:
        self.preprocess = FakePreprocessor()
        super().__init__(preprocess=self.preprocess)
        self.store.objects[DOCUMENT] = PAGED + pages

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """Run one job to its notification; its stored result, checked against its version's schema."""
        self.source.put(delivery(body, subscription=f"fleet-jobs-{body.get('priority', 'batch')}"))
        asyncio.run(self.run_until(1))
        (data,) = self.store.results.values()
        result: dict[str, Any] = json.loads(data)
        jsonschema.validate(result, contracts.load_schema("result", result["schema_version"]))
        return result


def test_a_v2_job_gets_every_page_and_a_blank_page_goes_to_no_model() -> None:
    world = World(b"x.x")
    result = world.answer(job("set", schema_version=2))
    assert result["status"] == "succeeded" and result["schema_version"] == 2
    assert result["page_count"] == 3 and result["outputs"] is None
    assert [p["page"] for p in result["pages"]] == [1, 2, 3]
    first, blank, third = result["pages"]
    assert blank["blank"] is True and blank["outputs"] is None and blank["ink"] == 0.0
    assert blank["timeline"]["inference_ms"] == 0.0
    for page in (first, third):
        assert page["blank"] is False and page["outputs"]["classify"]["label"] == "flange"
    # two pages reached the model (in batches with each other), the blank one never did
    assert sum(world.model.batches) == 2
    assert sorted(page for page, _urgent in world.preprocess.calls) == [1, 2, 3]
    assert world.preprocess.probes == [False]  # probed once, on the batch lane
    models = result["timeline"]["models"]["drawing_analyzer"]
    summed = first["timeline"]["inference_ms"] + third["timeline"]["inference_ms"]
    assert models["inference_ms"] == pytest.approx(summed, abs=0.11)
    assert result["timeline"]["inference_ms"] == pytest.approx(models["inference_ms"], abs=0.11)


def test_a_job_asking_for_one_page_gets_only_that_page() -> None:
    world = World(b"x.x")
    result = world.answer(job("one", schema_version=2, pages=[3]))
    assert [p["page"] for p in result["pages"]] == [3] and result["page_count"] == 3
    assert [page for page, _ in world.preprocess.calls] == [3]


@pytest.mark.parametrize(
    ("pages", "body", "code"),
    [
        (b"x.x", {"pages": [4]}, "PAGE_NOT_FOUND"),
        (b"x" * 65, {}, "TOO_MANY_PAGES"),
    ],
)
def test_pages_the_document_cannot_give_are_answered_with_their_code(
    pages: bytes, body: dict[str, Any], code: str
) -> None:
    world = World(pages)
    result = world.answer(job("bad", schema_version=2, **body))
    assert result["status"] == "failed" and result["error"]["code"] == code
    assert result["pages"] == [] and result["page_count"] == len(pages)
    assert world.preprocess.calls == [] and world.model.batches == []
    assert len(world.source.acked) == 1


def test_a_v1_job_of_several_pages_is_multi_page_input_and_names_the_way_out() -> None:
    world = World(b"xx")
    result = world.answer(job("old"))
    assert result["schema_version"] == 1 and result["error"]["code"] == "MULTI_PAGE_INPUT"
    assert "2 pages" in result["error"]["message"] and "schema_version 2" in result["error"]["message"]
    assert result["page_count"] == 2 and "pages" not in result
    assert world.preprocess.calls == []


def test_a_v1_job_of_one_page_is_answered_as_before_even_when_the_page_is_blank() -> None:
    world = World(b".")
    result = world.answer(job("old"))
    assert result["status"] == "succeeded" and result["outputs"]["classify"]["label"] == "flange"
    assert result["page_count"] == 1 and "pages" not in result
    assert world.model.batches == [1]  # no blank short-cut for version 1


def test_a_one_page_image_is_not_probed_and_a_v2_result_carries_its_outputs_at_the_top() -> None:
    world = World()
    result = world.answer(job("png", uri="gs://inputs/in/ok.png", schema_version=2))
    assert world.preprocess.probes == []  # one-page formats skip the pool round trip
    assert result["page_count"] == 1 and len(result["pages"]) == 1
    assert result["outputs"] == result["pages"][0]["outputs"] is not None
    assert result["pages"][0]["ink"] == 0.05


def test_a_page_past_a_one_page_image_is_page_not_found() -> None:
    world = World()
    result = world.answer(job("png", uri="gs://inputs/in/ok.png", schema_version=2, pages=[1, 2]))
    assert result["error"]["code"] == "PAGE_NOT_FOUND" and result["page_count"] == 1
    assert world.preprocess.calls == []


def test_an_interactive_jobs_pages_stay_on_the_interactive_lane() -> None:
    world = World(b"xxx")
    result = world.answer(job("now", schema_version=2, priority="interactive"))
    assert result["status"] == "succeeded" and len(result["pages"]) == 3
    assert world.preprocess.probes == [True]
    assert all(urgent for _page, urgent in world.preprocess.calls)
    assert world.model.interactive_flags and all(world.model.interactive_flags)


def test_a_document_of_blank_pages_names_the_workers_models_and_ran_none() -> None:
    world = World(b"..")
    result = world.answer(job("empty", schema_version=2))
    assert result["status"] == "succeeded" and all(p["blank"] for p in result["pages"])
    assert world.model.batches == [] and result["model"]["name"] == "drawing_analyzer"
    assert result["timeline"]["inference_ms"] == 0.0
