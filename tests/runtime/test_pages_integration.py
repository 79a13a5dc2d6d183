"""Pages on the local stack (issue 22): real tritonserver, the Pub/Sub and GCS emulators, a ``fleet worker``.

Documents are made in the test from the drawing generator: a 2-page TIFF (page 1 blank paper, page 2 a
gear) and a 3-page PDF (a bracket, a flange, a plate). Version 2 jobs get one result with every page
analysed (the blank one marked blank, sent to no model), ``pages: [2]`` gets page 2 alone, a version 1
job of the TIFF is MULTI_PAGE_INPUT and a one-page PDF in a version 1 job is answered like an image.
Every bad document (worker.dev.drawing_documents) is answered once with its code, on the first delivery,
and the worker stays up. One run (topics, subscriptions, worker) serves every case of the module.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from worker.dev import drawing_documents, harness
from worker.dev.drawings import render_image
from worker.shared import contracts

from .test_worker_integration import Run, module_run

pytestmark = pytest.mark.integration

DRAWING_SIZE = (877, 620)  # the drawing model's reference drawings' size
#: (seed, kind) of generator drawings the drawing model labels as the generator does, on TIFF and PDF pages
TIFF_DRAWING = (2, "gear")
PDF_DRAWINGS = ((1, "bracket"), (2, "flange"), (1, "plate"))
BAD_DOCUMENTS = {
    "encrypted": (drawing_documents.encrypted_pdf, "DOCUMENT_ENCRYPTED"),
    "empty": (drawing_documents.zero_page_pdf, "DOCUMENT_EMPTY"),
    "broken-xref": (lambda: drawing_documents.broken_xref_pdf(repairable=False), "DOCUMENT_UNREADABLE"),
    "huge-page": (drawing_documents.huge_page_pdf, "PAGE_TOO_LARGE"),
    "stream-bomb": (drawing_documents.stream_bomb_pdf, "DOCUMENT_TOO_COMPLEX"),
    "nested-forms": (drawing_documents.nested_forms_pdf, "DOCUMENT_TOO_COMPLEX"),
    "too-many-pages": (lambda: drawing_documents.vector_pdf(pages=65), "TOO_MANY_PAGES"),
}


def drawing(seed: int, kind: str) -> Any:
    image, label = render_image(seed, kind, size=DRAWING_SIZE)
    assert label == kind
    return image


@pytest.fixture(scope="module")
def documents(stack: Any, storage_client: Any) -> dict[str, str]:
    """gs:// URIs of the module's documents, uploaded once."""
    from PIL import Image  # noqa: PLC0415

    blank = Image.new("L", DRAWING_SIZE, 255)
    made = {
        "tiff": drawing_documents.multipage_tiff([blank, drawing(*TIFF_DRAWING)]),
        "pdf": drawing_documents.pdf_from_images([drawing(*d) for d in PDF_DRAWINGS]),
        "one-page-pdf": drawing_documents.pdf_from_images([drawing(*PDF_DRAWINGS[0])]),
        **{name: maker() for name, (maker, _code) in BAD_DOCUMENTS.items()},
    }
    bucket = storage_client.bucket(stack.env["FLEET_INPUT_BUCKET"])
    folder = f"pages-it/{uuid.uuid4().hex[:8]}"
    uris = {}
    for name, data in made.items():
        suffix = "tif" if name == "tiff" else "pdf"
        bucket.blob(f"{folder}/{name}.{suffix}").upload_from_string(data)
        uris[name] = f"gs://{bucket.name}/{folder}/{name}.{suffix}"
    return uris


@pytest.fixture(scope="module")
def run(stack: Any, storage_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One run of the fleet's topology with one worker, shared by the module's cases."""
    with module_run(stack, storage_client, tmp_path_factory.mktemp("pages-run")) as shared:
        yield shared


def job(run: Run, key: str, uri: str, **body: Any) -> harness.Message:
    """A job message (version 2 unless ``schema_version`` says otherwise) the collector can find."""
    document = {"schema_version": 2, "job_id": run.job_id(key), "input_uri": uri, **body}
    priority = str(document.get("priority", "batch"))
    attributes = {
        "priority": priority,
        "job_id": run.job_id(key),
        harness.RUN_ATTRIBUTE: run.run_id,
        harness.KEY_ATTRIBUTE: key,
    }
    return harness.Message(key, json.dumps(document).encode(), attributes)


def answered(run: Run, messages: list[harness.Message]) -> dict[str, dict[str, Any]]:
    """Publish, wait for every notification, and read each job's result (checked against its schema)."""
    run.publish(messages)
    run.wait([m.key for m in messages], timeout_s=120)
    results = {}
    for message in messages:
        document, _generation = run.result(message.key)
        jsonschema.validate(document, contracts.load_schema("result", document["schema_version"]))
        results[message.key] = document
    return results


def label(outputs: dict[str, Any]) -> str:
    return str(outputs["classify"]["label"])


@pytest.mark.timeout(240)
def test_a_tiff_and_a_pdf_get_one_result_with_every_page_and_a_page_can_be_chosen(
    run: Run, documents: dict[str, str]
) -> None:
    results = answered(
        run,
        [
            job(run, "tiff", documents["tiff"]),
            job(run, "pdf", documents["pdf"], priority="interactive"),
            job(run, "pdf-page-2", documents["pdf"], pages=[2]),
            job(run, "tiff-v1", documents["tiff"], schema_version=1),
            job(run, "one-page-pdf-v1", documents["one-page-pdf"], schema_version=1),
        ],
    )
    tiff = results["tiff"]
    assert (tiff["status"], tiff["page_count"], tiff["outputs"]) == ("succeeded", 2, None)
    blank, drawn = tiff["pages"]
    assert (blank["page"], blank["blank"], blank["outputs"]) == (1, True, None)
    assert blank["timeline"]["inference_ms"] == 0.0  # sent to no model
    assert (drawn["page"], drawn["blank"], label(drawn["outputs"])) == (2, False, TIFF_DRAWING[1])
    assert set(drawn["outputs"]) == {"classify", "embed"}

    pdf = results["pdf"]
    assert (pdf["status"], pdf["page_count"]) == ("succeeded", 3)
    assert [(p["page"], p["blank"], label(p["outputs"])) for p in pdf["pages"]] == [
        (n, False, kind) for n, (_seed, kind) in enumerate(PDF_DRAWINGS, start=1)
    ]
    models = pdf["timeline"]["models"]["drawing_analyzer"]
    assert models["inference_ms"] == pytest.approx(
        sum(p["timeline"]["inference_ms"] for p in pdf["pages"]), abs=0.2
    )

    chosen = results["pdf-page-2"]
    assert chosen["page_count"] == 3 and [p["page"] for p in chosen["pages"]] == [2]
    assert label(chosen["pages"][0]["outputs"]) == PDF_DRAWINGS[1][1]
    assert chosen["pages"][0]["outputs"] == pdf["pages"][1]["outputs"]  # the same page, the same answer

    old = results["tiff-v1"]
    assert (old["schema_version"], old["status"]) == (1, "failed")
    assert old["error"]["code"] == "MULTI_PAGE_INPUT" and old["page_count"] == 2
    single = results["one-page-pdf-v1"]
    assert (single["schema_version"], single["status"], single["page_count"]) == (1, "succeeded", 1)
    assert label(single["outputs"]) == PDF_DRAWINGS[0][1] and "pages" not in single


@pytest.mark.timeout(240)
def test_every_bad_document_is_answered_once_with_its_code_and_the_worker_stays_up(
    run: Run, documents: dict[str, str]
) -> None:
    messages = [job(run, f"bad-{name}", documents[name]) for name in BAD_DOCUMENTS]
    messages.append(job(run, "bad-past-the-end", documents["pdf"], pages=[2, 5]))
    results = answered(run, messages)
    expected = {f"bad-{name}": code for name, (_maker, code) in BAD_DOCUMENTS.items()}
    expected["bad-past-the-end"] = "PAGE_NOT_FOUND"
    assert {key: (r["status"], r["error"]["code"]) for key, r in results.items()} == {
        key: ("failed", code) for key, code in expected.items()
    }
    assert all(r["pages"] == [] and r["delivery_attempt"] == 1 for r in results.values())
    time.sleep(2.0)  # a nack or a crash would bring a second delivery / notification
    notes = run.collector.snapshot()
    assert {key: len(notes[key]) for key in expected} == dict.fromkeys(expected, 1)
    assert run.sub_stats()["unacked"] == 0
    # and the worker is alive and answers the next job
    after = answered(run, [job(run, "after-the-bad-ones", documents["tiff"], pages=[2])])
    assert label(after["after-the-bad-ones"]["pages"][0]["outputs"]) == TIFF_DRAWING[1]
    assert all(slot.running for slot in run.workers)
