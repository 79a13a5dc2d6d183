"""terraform/ against the providers' schemas (``@cdktf/provider-google``, ``-time``), and the check itself."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from . import provider_schema
from ._files import TERRAFORM


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    # Fetched once into .tools/ (scripts/lint-infra does it first); offline from then on.
    provider_schema.fetch()
    return provider_schema.load()


@pytest.fixture(scope="module")
def others() -> dict[str, dict[str, Any]]:
    provider_schema.fetch(provider=provider_schema.TIME)
    return provider_schema.load_others()


def test_module_and_examples_match_the_provider_schema(
    schema: dict[str, Any], others: dict[str, dict[str, Any]]
) -> None:
    problems, counted = provider_schema.check(schema, others=others)
    print(f"checked {counted} against {schema['provider']} ({schema['package']}) and {list(others)}")
    assert not problems, "\n".join(problems)
    assert counted["resource"] >= 35 and counted["data"] == 4 and counted["module"] >= 1
    assert counted["provider"] >= 1


def test_time_sleep_is_checked_against_the_time_provider(others: dict[str, dict[str, Any]]) -> None:
    time = others["time"]
    assert time["provider"] == "hashicorp/time 0.13.1"
    sleep = time["structs"][time["resource"]["time_sleep"]]
    assert {"create_duration", "triggers"} <= set(sleep)
    # Without the time provider's schema the same resource is an unknown google type.
    path = TERRAFORM / "monitoring.tf"
    problems, _ = provider_schema.check(provider_schema.load(), [path])
    assert any(
        "time_sleep.created_metrics_usable: no such resource type in hashicorp/google" in p for p in problems
    )


def test_schema_is_the_pinned_provider_and_has_what_the_module_relies_on(schema: dict[str, Any]) -> None:
    assert schema["provider"] == "hashicorp/google 6.50.0"
    assert len(schema["resource"]) > 1000 and len(schema["data"]) > 300
    structs = schema["structs"]
    policy = structs[structs[schema["resource"]["google_compute_region_autoscaler"]]["autoscaling_policy"][1]]
    assert policy["max_replicas"][0] is True and policy["min_replicas"][0] is True
    metric = structs[policy["metric"][1]]
    # versions.tf pins >= 6.0 for these two in the GA provider.
    assert {"filter", "single_instance_assignment"} <= set(metric)
    accelerator = structs[
        structs[schema["resource"]["google_compute_region_instance_template"]]["guest_accelerator"][1]
    ]
    assert set(accelerator) == {"count", "type"}, "snake_case names come from the registry anchors"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "planted.tf"
    path.write_text(text, encoding="utf-8")
    return path


def test_check_reports_planted_mistakes(schema: dict[str, Any], tmp_path: Path) -> None:
    module_source = os.path.relpath(TERRAFORM, tmp_path)
    path = _write(
        tmp_path,
        f"""
resource "google_pubsub_topik" "typo" {{
  name = "t"
}}

resource "google_pubsub_topic" "misspelt" {{
  name          = "t"
  labls         = {{}}
  message_storage_policy {{
    allowed_persistence_regions = ["asia-northeast1"]
    enforce_in_transitt         = true
  }}
}}

resource "google_pubsub_subscription" "missing_topic" {{
  name = "s"
  retry_policy {{
    minimum_backoff = "10s"
  }}
  dynamic "no_such_block" {{
    for_each = []
    content {{}}
  }}
}}

resource "google_compute_region_autoscaler" "no_policy" {{
  name   = "a"
  target = "t"
}}

data "google_compute_image" "ok" {{
  family = "f"
}}

module "fleet" {{
  source          = "{module_source}"
  project_id      = "p"
  container_imag  = "x"
}}
""",
    )
    problems, counted = provider_schema.check(schema, [path])
    text = "\n".join(problems)
    print(text)
    assert counted == {"resource": 4, "data": 1, "provider": 0, "module": 1}
    expected = [
        "resource google_pubsub_topik.typo: no such resource type",
        "google_pubsub_topic.misspelt: `labls` is not an argument or block here",
        "google_pubsub_topic.misspelt.message_storage_policy[0]: `enforce_in_transitt` is not an argument",
        "google_pubsub_subscription.missing_topic: required `topic` is not set",
        "google_pubsub_subscription.missing_topic: dynamic `no_such_block` is not a nested block here",
        "google_compute_region_autoscaler.no_policy: required `autoscaling_policy` is not set",
        "module fleet: `container_imag` is not a variable of",
        "module fleet: required variable `container_image` is not set",
        "module fleet: required variable `region` is not set",
    ]
    for fragment in expected:
        assert fragment in text, fragment
    assert len(problems) == len(expected), text
    assert "google_compute_image" not in text


def test_reduce_manifest_keeps_names_required_and_blocks() -> None:
    """The reduction on a hand-made manifest shaped like the real one (cdktf's struct and link layout)."""
    docs = "https://registry.terraform.io/providers/hashicorp/google/6.50.0/docs"
    prop_docs = f"{{@link {docs}/resources/thing#for_each_thing Thing#for_each_thing}}"
    manifest = {
        "types": {
            "p.thing.Thing": {
                "kind": "class",
                "docs": {"summary": f"Represents a {{@link {docs}/resources/thing google_thing}}."},
                "initializer": {"parameters": [{"name": "config", "type": {"fqn": "p.thing.ThingConfig"}}]},
            },
            "p.thing.ThingConfig": {
                "kind": "interface",
                "datatype": True,
                "properties": [
                    {"name": "name", "type": {"primitive": "string"}},
                    # cdktf renames clashing names; the registry anchor keeps the real one.
                    {"name": "forEachThing", "optional": True, "docs": {"remarks": prop_docs}, "type": {}},
                    {
                        "name": "part",
                        "optional": True,
                        "type": {
                            "union": {
                                "types": [
                                    {"fqn": "cdktf.IResolvable"},
                                    {"collection": {"kind": "array", "elementtype": {"fqn": "p.thing.Part"}}},
                                ]
                            }
                        },
                    },
                ],
            },
            "p.thing.Part": {
                "kind": "interface",
                "datatype": True,
                "properties": [{"name": "sizeGb", "type": {}}],
            },
            "p.provider.GoogleProvider": {
                "kind": "class",
                "docs": {"summary": f"Represents a {{@link {docs} google}}."},
                "initializer": {"parameters": [{"name": "config", "type": {"fqn": "p.provider.Config"}}]},
            },
            "p.provider.Config": {"kind": "interface", "datatype": True, "properties": []},
        }
    }
    reduced = provider_schema.reduce_manifest(manifest)
    assert reduced["resource"] == {"google_thing": "p.thing.ThingConfig"}
    assert reduced["provider_config"] == "p.provider.Config"
    assert reduced["structs"]["p.thing.ThingConfig"] == {
        "name": [True, None],
        "for_each_thing": [False, None],
        "part": [False, "p.thing.Part"],
    }
    assert reduced["structs"]["p.thing.Part"] == {"size_gb": [True, None]}
