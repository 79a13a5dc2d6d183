"""The shipped copy of the resource names, the environment contract, and the shared percentile."""

from __future__ import annotations

import math
from pathlib import Path

from worker.shared import environment, stats
from worker.shared.resources import DEFAULT_CONFIG_PATH, TERRAFORM_CONFIG_PATH, load_resources


def test_the_packaged_fleet_json_is_byte_identical_to_the_one_terraform_reads() -> None:
    # The wheel ships worker/shared/fleet.json; Terraform jsondecodes terraform/fleet.json. One fact:
    # edit terraform/fleet.json and copy it (cp terraform/fleet.json worker/shared/fleet.json).
    assert DEFAULT_CONFIG_PATH.read_bytes() == TERRAFORM_CONFIG_PATH.read_bytes()


def test_load_resources_reads_the_packaged_copy_by_default(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("FLEET_CONFIG", raising=False)
    assert load_resources().full("jobs") == "fleet-jobs"


def test_resource_environment_names_every_resource_variable() -> None:
    env = environment.resource_environment(load_resources(), "p1")
    assert tuple(env) == environment.RESOURCE_VARIABLES
    assert env[environment.INPUT_BUCKET] == "p1-fleet-inputs"
    assert env[environment.BATCH_SUBSCRIPTION] == "fleet-jobs-batch"


def test_env_file_round_trips_quoted_values_and_skips_other_lines(tmp_path: Path) -> None:
    values = {"A": "plain", "B": "with space", "C": "it's", "D": ""}
    path = tmp_path / "env"
    path.write_text(
        "# comment\n" + environment.render_env_file(values) + "echo hi\nNOT A=LINE\nx='unbalanced\n",
        encoding="utf-8",
    )
    assert environment.read_env_file(path) == values


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert stats.percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert stats.percentile([3.0], 99) == 3.0
    assert math.isnan(stats.percentile([], 50))
