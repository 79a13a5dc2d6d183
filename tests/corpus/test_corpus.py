"""The bad-input corpus: every hostile job gets exactly one terminal answer with a stable error code.

Each file in ``cases/`` is one job message (data + attributes) and optionally its input object (bytes
generated here from a recipe, so bombs and truncations never sit in the repository), plus the expected
status and ``worker/shared/errors.py`` code. All cases run together against ONE real ``fleet worker`` on the
local stack, on a private copy of the topics and subscriptions (so delivery counts are this run's own). Then,
per case: exactly one terminal notification with the expected code, answered on the first delivery (no
retry storm), exactly one result object (at ``results/<job_id>.json`` or, for an unusable job id,
``results/_rejected/<message_id>.json``) agreeing with the notification; and the worker is still running.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from worker.dev import harness
from worker.shared import errors

CASES_DIR = Path(__file__).parent / "cases"
CASE_FILES = sorted(CASES_DIR.glob("*.json"))
#: The corpus worker's byte limit, so the "over the limit" input stays small (settings: max_input_bytes).
CORPUS_MAX_INPUT_BYTES = 1024 * 1024
ANSWER_TIMEOUT_S = 120.0
#: After the last answer, wait this long for any duplicate/redelivered answer to show up.
QUIET_S = 3.0
KNOWN_CODES = {cls.code for cls in errors.PERMANENT_ERRORS}


def load_case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    case["name"] = path.stem
    return case


def test_corpus_is_big_and_well_formed() -> None:
    cases = [load_case(p) for p in CASE_FILES]
    bad = [c for c in cases if c["category"] != "control"]
    assert len(bad) >= 40
    categories = {c["category"] for c in bad}
    assert {
        "invalid_json",
        "wrong_type",
        "missing_field",
        "schema_version",
        "oversized",
        "job_id",
        "input_uri",
        "input_object",
        "deadline",
        "analysis",
        "priority",
    } <= categories
    for case in bad:
        assert case["expect"]["code"] in KNOWN_CODES, case["name"]


@dataclass
class CaseRun:
    case: dict[str, Any]
    job_id: str
    published: harness.Published | None = None


def _render(value: Any, subs: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, replacement in subs.items():
            value = value.replace("{" + name + "}", replacement)
        return value
    if isinstance(value, list):
        return [_render(v, subs) for v in value]
    if isinstance(value, dict):
        return {_render(k, subs): _render(v, subs) for k, v in value.items()}
    return value


def build_data(spec: dict[str, Any], subs: dict[str, str]) -> bytes:
    """The message data of a case (JSON, raw text, base64 bytes or a generated recipe)."""
    if "json" in spec:
        return json.dumps(_render(spec["json"], subs)).encode()
    if "text" in spec:
        return str(_render(spec["text"], subs)).encode()
    if "base64" in spec:
        return base64.b64decode(spec["base64"])
    recipe = spec["recipe"]
    base = {"schema_version": 1, "job_id": subs["job_id"], "input_uri": subs["input_uri"]}
    if recipe == "deep_nesting":
        depth = int(spec["depth"])
        head = json.dumps(base)[:-1]
        return f'{head}, "params": {{"x": {"[" * depth}{"]" * depth}}}}}'.encode()
    if recipe == "oversized_params":
        base["params"] = {"padding": "x" * int(spec["bytes"])}
        return json.dumps(base).encode()
    if recipe == "trailing_garbage":
        return json.dumps(base).encode() + b' {"again": true}'
    raise ValueError(f"unknown data recipe {recipe!r}")


def build_cases(
    env: harness.StackEnv, storage_client: Any, run_id: str, drawing_uri: str
) -> tuple[list[CaseRun], list[harness.Message]]:
    """Every case's message, with its input object uploaded (generated from its recipe)."""
    runs: list[CaseRun] = []
    messages: list[harness.Message] = []
    for path in CASE_FILES:
        case = load_case(path)
        job_id = f"{run_id}-{case['name']}"
        input_uri = drawing_uri
        recipe = case.get("input")
        if recipe and recipe.get("recipe") != "drawing_png":
            data, content_type = harness.input_recipe(recipe)
            input_uri = harness.upload(
                storage_client, env.input_bucket, f"corpus/{run_id}/{case['name']}", data, content_type
            )
        subs = {
            "job_id": job_id,
            "input_uri": input_uri,
            "input_bucket": env.input_bucket,
            "results_bucket": env.results_bucket,
        }
        attributes = {"priority": "batch", harness.RUN_ATTRIBUTE: run_id, harness.KEY_ATTRIBUTE: case["name"]}
        attributes.update(case.get("attributes", {}))
        runs.append(CaseRun(case, job_id))
        messages.append(harness.Message(case["name"], build_data(case["data"], subs), attributes))

    return runs, messages


@pytest.fixture(scope="module")
def corpus(
    harness_env: harness.StackEnv, harness_storage: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Publish every case to one worker; collect notifications, result objects and delivery counts."""
    env = harness_env
    storage_client = harness_storage
    run_id = "corpus" + harness.new_run_id()
    topology = harness.RunTopology.named(run_id)
    topology.create(env)
    run_env = harness.stack_for_run(env, topology)
    workdir = tmp_path_factory.mktemp("corpus")
    drawing_uri = harness.upload(
        storage_client, env.input_bucket, f"corpus/{run_id}/drawing.png", harness.drawing_png(), "image/png"
    )
    runs, messages = build_cases(env, storage_client, run_id, drawing_uri)
    worker = harness.worker_slot(
        "corpus-worker",
        run_env,
        workdir,
        extra_env={
            "FLEET_MAX_INPUT_BYTES": str(CORPUS_MAX_INPUT_BYTES),
            "FLEET_WATCH_METADATA": "false",
            "FLEET_PREPROCESS_PROCESSES": "1",
        },
    )
    worker.restart = False  # a crash must show, not be hidden by a restart
    collector = harness.NotificationCollector(run_env, run_id=run_id).start()
    worker.start()
    try:
        publisher = harness.new_publisher()
        published = harness.publish_all(publisher, run_env.topic_path(topology.jobs_topic), messages)
        for run, pub in zip(runs, published, strict=True):
            run.published = pub
        keys = [r.case["name"] for r in runs]
        missing = collector.wait_for(keys, timeout_s=ANSWER_TIMEOUT_S)
        time.sleep(QUIET_S)
        worker.poll()
        alive = worker.running
        storage = storage_client.bucket(env.results_bucket)
        objects = {}
        for run in runs:
            assert run.published is not None
            names = (f"results/{run.job_id}.json", f"results/_rejected/{run.published.message_id}.json")
            found = {}
            for name in names:
                blob = storage.get_blob(name)
                if blob is not None:
                    found[name] = json.loads(blob.download_as_bytes())
            objects[run.case["name"]] = found
        yield {
            "runs": {r.case["name"]: r for r in runs},
            "notifications": collector.snapshot(),
            "objects": objects,
            "missing": missing,
            "alive": alive,
            "exits": list(worker.exits),
            "log": worker.log_path,
            "stats": harness.delivery_stats(
                env.values.get("FLEET_PUBSUB_ADMIN_URL"), topology.subscriptions()
            ),
            "message_ids": {r.case["name"]: r.published.message_id for r in runs if r.published},
        }
    finally:
        collector.close()
        worker.stop(timeout_s=30)
        topology.delete(env)


@pytest.mark.integration
def test_worker_survives_the_corpus(corpus: dict[str, Any]) -> None:
    log_tail = corpus["log"].read_text(errors="replace")[-3000:]
    assert corpus["alive"], f"the worker exited {corpus['exits']} during the corpus; log tail:\n{log_tail}"
    missing = sorted(corpus["missing"])
    assert not missing, f"no answer for {missing}; log tail:\n{log_tail}"


@pytest.mark.integration
@pytest.mark.parametrize("case_file", CASE_FILES, ids=[p.stem for p in CASE_FILES])
def test_case(corpus: dict[str, Any], case_file: Path) -> None:
    name = case_file.stem
    run: CaseRun = corpus["runs"][name]
    expect = run.case["expect"]
    notes = corpus["notifications"].get(name, [])
    # Exactly one terminal notification, with the stable code.
    assert len(notes) == 1, f"{name}: {len(notes)} notifications: {[dict(n.data) for n in notes]}"
    note = notes[0]
    assert note.status == expect["status"], f"{name}: {dict(note.data)}"
    assert note.error_code == expect["code"], f"{name}: {dict(note.data)}"
    # Exactly one result object, the one the notification points at, saying the same thing.
    found = corpus["objects"][name]
    assert len(found) == 1, f"{name}: result objects {sorted(found)}"
    (object_name, result), *_ = found.items()
    assert str(note.data.get("result_uri", "")).endswith("/" + object_name)
    assert result["status"] == expect["status"]
    assert (result.get("error") or {}).get("code") == expect["code"]
    # Permanent errors are answered on the first delivery.
    if expect["status"] != "succeeded":
        assert result.get("delivery_attempt") in (None, 0, 1), f"{name}: {result.get('delivery_attempt')}"
    # ... and never redelivered (no retry storm), counted by the emulator on the lane subscriptions.
    message_id = corpus["message_ids"][name]
    deliveries = sum(
        int(sub.get("deliveries_per_message", {}).get(message_id, 0)) for sub in corpus["stats"].values()
    )
    assert deliveries == 1, f"{name}: delivered {deliveries} times"


@pytest.mark.integration
def test_emulator_counted_the_corpus(corpus: dict[str, Any]) -> None:
    """The delivery check above is only meaningful if the emulator's counters were read."""
    assert corpus["stats"], "no delivery stats from FLEET_PUBSUB_ADMIN_URL"
