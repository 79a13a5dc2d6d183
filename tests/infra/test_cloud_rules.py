"""Google Cloud rules that `terraform validate` and the provider schema cannot see, as tests.

Each test names the rule's source (Google's documentation or the provider's issue tracker) and reads the
configuration with python-hcl2. They run on this checkout's terraform/ and docs/deploy.md; to run them on
another checkout (e.g. to see a rule fail on the configuration before its fix), point
``FLEET_CLOUD_RULES_ROOT`` at a folder holding ``terraform/`` and ``docs/deploy.md``::

    git archive <commit> terraform docs/deploy.md | tar -x -C /tmp/before
    FLEET_CLOUD_RULES_ROOT=/tmp/before .venv/bin/python -m pytest -m cloud_rule tests/infra -q

``make lint-infra`` runs every test marked ``cloud_rule`` (packer's upload rules live in test_boot.py).
"""

from __future__ import annotations

import math
import os
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from worker.shared.resources import load_resources

from ._files import REPO, parse_hcl

pytestmark = pytest.mark.cloud_rule

ROOT = Path(os.environ.get("FLEET_CLOUD_RULES_ROOT", REPO))
TF = ROOT / "terraform"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
LANES = tuple(lane.name for lane in load_resources(REPO / "terraform" / "fleet.json").lanes)

# Pub/Sub metrics that count messages (the backlog now) and that measure age (growing with time).
COUNT_METRICS = frozenset(
    {
        "pubsub.googleapis.com/subscription/num_undelivered_messages",
        "pubsub.googleapis.com/subscription/num_unacked_messages_by_region",
    }
)
AGE_METRICS = frozenset(
    {
        "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
        "pubsub.googleapis.com/subscription/oldest_unacked_message_age_by_region",
    }
)
DLQ_HANDLER_RETENTION_S = 604800  # terraform/pubsub.tf: the dead-letter subscriptions keep 7 days
CREATED_METRIC_DELAY_S = 600  # "it could take up to 10 minutes to become available"


# --- reading the configuration ------------------------------------------------------------------------


@cache
def _tf(name: str) -> dict[str, Any]:
    return parse_hcl(TF / name)


def _all(kind: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(TF.glob("*.tf")):
        out += parse_hcl(path).get(kind, [])
    return out


def _locals() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in _all("locals"):
        merged.update(block)
    return merged


def _variables() -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for block in _all("variable"):
        merged.update(block)
    return merged


def _resources(rtype: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for block in _all("resource"):
        out.update(block.get(rtype, {}))
    return out


def _one(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    assert isinstance(value, list) and len(value) == 1, f"{key}: expected one block, got {value!r}"
    block: dict[str, Any] = value[0]
    return block


def _optional_default(type_expr: str, attribute: str) -> dict[str, float]:
    """The default map of ``attribute = optional(map(number), { k = v, ... })`` in an object type."""
    match = re.search(attribute + r"\s*=\s*optional\(map\(number\),\s*\{([^}]*)\}", type_expr)
    assert match, f"no optional map default for {attribute}"
    return {k: float(v) for k, v in re.findall(r"(\w+)\s*=\s*([\d.]+)", match.group(1))}


@dataclass(frozen=True)
class Signal:
    """One metric signal of an autoscaler as the module deploys it by default."""

    key: str
    metric: str
    assignment: float


_POLICY = r"\{metric = (?P<metric>[^,]+), filter = \"(?:[^\"\\]|\\.)*\", assignment = (?P<assignment>[^}]+)\}"
_LANE_POLICIES = re.compile(r"\{for (\w+), \w+ in local\.lanes : \1 => " + _POLICY + r"\}")
_NAMED_POLICY = re.compile(r"(?P<key>[\w-]+) = " + _POLICY)


def _resolve(expr: str, lane: str | None) -> Any:
    """A metric or assignment expression of a policy map for one lane: literals, locals, variable defaults."""
    expr = expr.strip()
    locals_, variables = _locals(), _variables()
    if m := re.fullmatch(r"local\.(\w+)\[\w+\]", expr):
        return locals_[m.group(1)][lane]
    if m := re.fullmatch(r"local\.(\w+)", expr):
        return locals_[m.group(1)]
    if m := re.fullmatch(r"var\.(\w+)\[\w+\]", expr):
        return variables[m.group(1)]["default"][lane]
    if m := re.fullmatch(r"var\.(\w+)", expr):
        return variables[m.group(1)]["default"]
    if m := re.fullmatch(r"var\.(\w+)\.(\w+)\[\w+\]", expr):
        return _optional_default(str(variables[m.group(1)]["type"]), m.group(2))[str(lane)]
    return float(expr)


def _signals(policies_local: str) -> list[Signal]:
    """The signals a policy map (``spot_policies``/``fallback_policies``) gives for fleet.json's lanes."""
    text = str(_locals()[policies_local])
    signals: list[Signal] = []
    for_lanes = _LANE_POLICIES.search(text)
    assert for_lanes, f"{policies_local}: no per-lane policy comprehension in {text[:200]}"
    for lane in LANES:
        signals.append(
            Signal(
                lane,
                _resolve(for_lanes.group("metric"), lane),
                float(_resolve(for_lanes.group("assignment"), lane)),
            )
        )
    rest = text[: for_lanes.start()] + text[for_lanes.end() :]
    for named in _NAMED_POLICY.finditer(rest):
        signals.append(
            Signal(
                named.group("key"),
                _resolve(named.group("metric"), None),
                float(_resolve(named.group("assignment"), None)),
            )
        )
    return signals


def _autoscaler_signals() -> dict[str, list[Signal]]:
    return {"spot": _signals("spot_policies"), "on-demand": _signals("fallback_policies")}


def recommended_vms(value: float, assignment: float) -> int:
    """VMs a per-group metric asks for: the queue divided by the VMs never above the assignment."""
    return math.ceil(value / assignment) if value > 0 else 0


# --- the rules ----------------------------------------------------------------------------------------


def test_an_autoscaler_names_each_metric_once() -> None:
    """An autoscaler handles one signal per metric type, Cloud Monitoring metrics up to 5 (multiple-signals:
    cloud.google.com/compute/docs/autoscaler/multiple-signals; "You can configure autoscaling based on up to
    5 Monitoring metrics per MIG", cloud.google.com/compute/docs/autoscaler/scaling-cloud-monitoring-metrics).
    Compute Engine's autoscaler documentation lists using one metric more than once among its limitations
    (the review behind issue 30); gcloud's `--update-stackdriver-metric`/`--remove-stackdriver-metric` key a
    policy by its metric
    (cloud.google.com/sdk/gcloud/reference/compute/instance-groups/managed/set-autoscaling).
    A repeated metric with another filter is refused (400) and the group never leaves zero."""
    for group, signals in _autoscaler_signals().items():
        metrics = [s.metric for s in signals]
        repeated = sorted({m for m in metrics if metrics.count(m) > 1})
        assert not repeated, f"{group} autoscaler names {repeated} more than once: {signals}"
        assert len(metrics) <= 5, f"{group}: {len(metrics)} metric signals, the autoscaler takes 5"
    precondition = str(_resources("google_compute_region_autoscaler")["workers"]["lifecycle"])
    assert "distinct(" in precondition, "the module refuses a repeated metric at plan time too"


def test_single_instance_assignment_rounds_up_so_each_lane_goes_from_zero_to_n_in_one_step() -> None:
    """The autoscaler keeps "the number of tasks in the queue divided by the number of workers" at or below
    the target (cloud.google.com/compute/docs/autoscaler/scaling-queue-based), i.e. ceil(value /
    single_instance_assignment) VMs, "proportional to the value of this metric"
    (AutoscalingPolicyCustomMetricUtilization.singleInstanceAssignment, Compute API reference). A count
    metric then asks for N VMs the first time it sees a backlog of N assignments; an age metric asks for one
    more VM per assignment of age, one step per `assignment` seconds."""
    signals = {s.key: s for s in _autoscaler_signals()["spot"]}
    max_replicas = int(_variables()["autoscaler_max_replicas"]["default"])
    for lane in LANES:
        s = signals[lane]
        assert s.metric in COUNT_METRICS, f"{lane} must signal on a message count, not {s.metric}"
        assert recommended_vms(0, s.assignment) == 0, "an empty lane asks for no VM"
        assert recommended_vms(1, s.assignment) == 1, "one waiting job brings a VM from zero"
        for n in (1, max_replicas):
            assert recommended_vms(n * s.assignment, s.assignment) == n, "a burst of n assignments: n VMs"
    handler = signals["dead-letter-handler"]
    # The handler answers dead letters on one VM: any number of them must not bring up the GPU fleet.
    for dead_letters_or_age_s in (1, 5_000, DLQ_HANDLER_RETENTION_S):
        assert recommended_vms(dead_letters_or_age_s, handler.assignment) == 1, (
            f"{dead_letters_or_age_s} on {handler.metric} asks for "
            f"{recommended_vms(dead_letters_or_age_s, handler.assignment)} VMs"
        )
    # The fallback's age signals round up too: its first on-demand VM starts at any unacked job, and the
    # module must say so instead of promising a stall threshold.
    for s in _autoscaler_signals()["on-demand"]:
        assert s.metric in AGE_METRICS
        assert recommended_vms(1, s.assignment) == 1
    description = str(_variables()["on_demand_fallback"]["description"])
    assert "as soon as" in description and "stays at zero" not in description, description


def test_alert_policies_on_metrics_created_in_the_same_apply_wait_until_the_metric_is_usable() -> None:
    """Creating an alert policy on a log-based metric (or metric descriptor) from the same apply fails with
    `Error 404: Cannot find metric(s) ... If a metric was created recently, it could take up to 10 minutes
    to become available` (hashicorp/terraform-provider-google#11102). depends_on on the metric is not
    enough; the policy must wait behind a time_sleep of the documented 10 minutes on the metric."""
    locals_ = _locals()
    created: dict[str, str] = {}  # text an alert filter holds when it names the metric -> metric resource
    for name in _resources("google_logging_metric"):
        created[f"google_logging_metric.{name}.name"] = f"google_logging_metric.{name}"
    for name, body in _resources("google_monitoring_metric_descriptor").items():
        created[str(body["type"]).strip("${}")] = f"google_monitoring_metric_descriptor.{name}"
    assert created, "the module creates metrics"
    sleeps = _resources("time_sleep")
    default_wait = float(_variables().get("created_metric_wait_s", {}).get("default", 0))
    checked = 0
    for name, policy in _resources("google_monitoring_alert_policy").items():
        text = str(policy.get("conditions"))
        for ref in re.findall(r"local\.(\w+)", text):  # filters kept in locals
            text += str(locals_.get(ref, ""))
        needed = {resource for marker, resource in created.items() if marker in text}
        if not needed:
            continue
        checked += 1
        waits = [s.strip("${}").split(".")[1] for s in policy.get("depends_on", []) if "time_sleep." in s]
        assert waits, f"alert {name} on {sorted(needed)} is created without waiting for the metric"
        for wait in waits:
            sleep = sleeps[wait]
            covered = {r for r in needed if r in str(sleep.get("triggers")) + str(sleep.get("depends_on"))}
            assert covered == needed, f"time_sleep.{wait} does not follow {sorted(needed - covered)}"
            duration = str(sleep["create_duration"])
            seconds = default_wait if "var.created_metric_wait_s" in duration else float(duration.rstrip("s"))
            assert seconds >= CREATED_METRIC_DELAY_S, f"time_sleep.{wait} waits {seconds} s"
    assert checked >= 2, "the crash-loop and failure alerts are on metrics the module creates"


def test_gpu_quota_covers_max_replicas_plus_the_rollout_surge() -> None:
    """A rollout creates up to `max_surge` VMs above the group's size before it removes old ones
    (cloud.google.com/compute/docs/instance-groups/rolling-out-updates-to-managed-instance-groups, "max
    surge"), and every VM's GPU counts against the region's (preemptible) GPU quota and GPUS_ALL_REGIONS
    (cloud.google.com/compute/resource-usage#gpu_quota). At max size the surge fails on quota unless the
    request covers max_replicas + max_surge."""
    mig = _resources("google_compute_region_instance_group_manager")["workers"]
    surge = str(_one(mig, "update_policy")["max_surge_fixed"])
    outputs: dict[str, Any] = {}
    for block in _all("output"):
        outputs.update(block)
    assert "gpu_quota_required" in outputs, "the module states the quota it needs"
    value = str(outputs["gpu_quota_required"]["value"])
    assert surge.strip("${}") in value and "var.autoscaler_max_replicas" in value, value
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    quota = doc[doc.index("GPU quota") :]
    quota = quota[: quota.index("\n## ", 1)]
    assert "gpu_quota_required" in quota and "surge" in quota, "deploy.md asks for max_replicas + surge"


def test_rollout_deletes_the_old_template_only_after_no_vm_uses_it() -> None:
    """A template that a MIG (or a VM of it) still uses cannot be deleted: `resourceInUseByAnotherResource`
    (hashicorp/terraform-provider-google#1448 on region MIGs with rolling updates; #1601: name_prefix +
    create_before_destroy). A new template needs a new name (name_prefix), must exist before the group
    points at it (create_before_destroy), and Terraform may delete the old one only after the group's
    update returned with every VM on the new version (wait_for_instances_status = "UPDATED", provider docs
    of google_compute_region_instance_group_manager)."""
    templates = _resources("google_compute_region_instance_template")
    assert templates
    for name, body in templates.items():
        assert "name_prefix" in body and "name" not in body, (
            f"template {name}: name_prefix, never a fixed name"
        )
        assert _one(body, "lifecycle").get("create_before_destroy") is True, name
    for name, mig in _resources("google_compute_region_instance_group_manager").items():
        assert mig.get("wait_for_instances") is True, (
            f"MIG {name} returns before its VMs left the old template"
        )
        assert mig.get("wait_for_instances_status") == "UPDATED", name
        timeouts = _one(mig, "timeouts")
        assert "update" in timeouts, f"MIG {name}: a rollout outlives the default 15 min update timeout"


def test_workers_without_external_ip_reach_google_apis_and_their_registry() -> None:
    """A VM without an external IP reaches Google APIs only with Private Google Access on its subnet
    (cloud.google.com/vpc/docs/private-google-access), Artifact Registry included ("You can access Artifact
    Registry using the IP addresses for the default Google APIs and services domains",
    cloud.google.com/artifact-registry/docs/securing-with-vpc-sc), and anything else (a registry outside
    Google) only through Cloud NAT (cloud.google.com/nat/docs/overview)."""
    for name, template in _resources("google_compute_region_instance_template").items():
        interface = _one(template, "network_interface")
        assert "access_config" not in interface, f"template {name} has an external IP"
        checks = str(_one(template, "lifecycle").get("precondition"))
        assert "private_ip_google_access" in checks, (
            f"template {name}: a provided subnet is not checked for PGA"
        )
        assert "enable_nat" in checks and "image_on_google_registry" in checks, (
            f"template {name}: an image outside Google's registries is not checked for NAT"
        )
    for name, subnet in _resources("google_compute_subnetwork").items():
        assert subnet.get("private_ip_google_access") is True, name
    nat = _resources("google_compute_router_nat")
    assert nat and all(n.get("source_subnetwork_ip_ranges_to_nat") for n in nat.values())
    host = str(_locals().get("image_on_google_registry"))
    assert "-docker.pkg.dev" in host and "gcr.io" in host, host


# gcloud's --filter: `key~regex` is an unanchored regular-expression match, `key=value` equality, and
# `key:(a b)` matches any of the words (`gcloud topic filters`). The value filtered on is the resource's
# field as the API returns it: `zone` of an accelerator type is a URL.
_ZONE_URL = "https://www.googleapis.com/compute/v1/projects/my-project/zones/{zone}"


def _gcloud_filter_matches(expression: str, item: dict[str, str]) -> bool:
    for term in re.split(r"\s+AND\s+", expression.strip()):
        if m := re.fullmatch(r"(\w+)~(.+)", term):
            ok = re.search(m.group(2), item[m.group(1)]) is not None
        elif m := re.fullmatch(r"(\w+)=(.+)", term):
            ok = item[m.group(1)] == m.group(2)
        elif m := re.fullmatch(r"(\w+):\(\s*(.+?)\s*\)", term):
            words = re.split(r"[/\s]+", item[m.group(1)])
            ok = any(w in words for w in m.group(2).split())
        else:
            raise AssertionError(f"unsupported filter term {term!r}")
        if not ok:
            return False
    return True


def test_deploy_doc_lists_the_zones_with_the_gpu_by_filtering_on_the_zone_url() -> None:
    """`gcloud compute accelerator-types list --filter="zone:( ZONE … )"` is the documented narrowing
    (cloud.google.com/sdk/gcloud/reference/compute/accelerator-types/list); `zone` holds the zone's URL, so
    an anchored `zone~^REGION-` matches nothing while `zone~/zones/REGION-` matches the region's zones."""
    doc = DEPLOY_DOC.read_text(encoding="utf-8")
    commands = [line for line in doc.splitlines() if "accelerator-types list" in line and "--filter" in line]
    assert commands, "deploy.md lists the zones that have the GPU"
    for command in commands:
        words = shlex.split(command)
        expression = next(w.split("=", 1)[1] for w in words if w.startswith("--filter="))
        expression = expression.replace("REGION", "asia-northeast1")
        here = {"name": "nvidia-l4", "zone": _ZONE_URL.format(zone="asia-northeast1-a")}
        elsewhere = {"name": "nvidia-l4", "zone": _ZONE_URL.format(zone="us-central1-a")}
        assert _gcloud_filter_matches(expression, here), f"{command}: lists nothing for the region"
        assert not _gcloud_filter_matches(expression, elsewhere), f"{command}: lists other regions"
