"""Static checks of the Terraform module: the structure issue 6 asks for, read with python-hcl2."""

from __future__ import annotations

import importlib.util
import json
import re

from worker.dev import capacity
from worker.runtime import settings
from worker.shared.resources import load_resources

from ._files import PACKER, TERRAFORM, all_resources, blocks, dynamic, locals_, one, parse_hcl, resources

BASIC_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
PROJECT_ROLES_ALLOWED = {"roles/monitoring.metricWriter", "roles/logging.logWriter"}


def test_every_tf_file_parses() -> None:
    files = sorted(TERRAFORM.rglob("*.tf"))
    assert len(files) >= 10
    for path in files:
        assert parse_hcl(path), path


def test_module_layout_and_pinned_provider() -> None:
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
        assert (TERRAFORM / name).is_file(), name
    terraform = parse_hcl(TERRAFORM / "versions.tf")["terraform"][0]
    google = terraform["required_providers"][0]["google"]
    assert google["source"] == "hashicorp/google"
    assert re.fullmatch(r">= [\d.]+, < [\d.]+", google["version"]), google["version"]
    assert "<" in terraform["required_version"]


def test_every_variable_is_typed_and_described() -> None:
    variables = blocks("variable")
    assert variables
    for name, body in variables.items():
        assert body.get("type"), f"variable {name} has no type"
        assert len(str(body.get("description", ""))) > 10, f"variable {name} has no description"
    for name, body in blocks("output").items():
        assert body.get("description"), f"output {name} has no description"


def test_shared_autoscaler_variables_have_literal_defaults() -> None:
    """The fleet simulator reads these defaults; they are part of a contract, not tuning knobs."""
    v = blocks("variable")
    assert v["autoscaler_max_replicas"]["default"] == 10
    assert v["autoscaler_cooldown_period_s"]["default"] == 120
    # the batch lane's assignment follows the capacity projection of the deployed machine type
    projected = capacity.projection_for(v["machine_type"]["default"])
    assert v["autoscaler_backlog_per_vm"]["default"] == capacity.backlog_per_vm(projected)
    assert v["autoscaler_scale_in_max_replicas"]["default"] == 2
    assert v["autoscaler_scale_in_time_window_s"]["default"] == 600
    assert v["scaling_schedules"]["default"] == {
        "weekday-daytime": {
            "min_required_replicas": 1,
            "schedule": "0 9 * * MON-FRI",
            "duration_s": 36000,
            "time_zone": "Asia/Tokyo",
        }
    }
    assert "default" not in v["container_image"]
    assert {"project_id", "region"} <= set(v)


def test_names_come_from_fleet_json_shared_with_the_local_stack() -> None:
    loc = locals_()
    assert loc["fleet"] == '${jsondecode(file("${path.module}/fleet.json"))}'
    assert loc["topics"] == '${{for key, short in local.fleet.topics : key => "${local.prefix}-${short}"}}'
    assert "${local.prefix}-${lane.subscription}" in loc["lanes"]
    assert loc["dead_letter_subscription"] == "${local.prefix}-${local.fleet.dead_letter_subscription}"
    assert (
        loc["dead_letter_handler_subscription"]
        == "${local.prefix}-${local.fleet.dead_letter_handler_subscription}"
    )
    assert "${var.project_id}-${local.prefix}-${short}" in loc["buckets"]
    # The same expansion the local stack uses (worker.shared.resources) gives the contract's names.
    res = load_resources(TERRAFORM / "fleet.json")
    assert res.full(res.jobs_topic) == "fleet-jobs"
    assert {res.full(lane.subscription) for lane in res.lanes} == {
        "fleet-jobs-interactive",
        "fleet-jobs-batch",
    }
    assert res.full(res.dead_letter_subscription) == "fleet-dead-letter-hold"
    assert res.full(res.dead_letter_handler_subscription) == "fleet-dead-letter-handler"
    assert res.inputs_bucket("p") == "p-fleet-inputs"
    raw = json.loads((TERRAFORM / "fleet.json").read_text(encoding="utf-8"))
    assert set(raw["buckets"]) >= {"inputs", "results"}


def test_lane_subscriptions_have_retry_dead_letter_and_never_expire() -> None:
    subs = resources("google_pubsub_subscription")
    lanes = subs["lanes"]
    assert lanes["for_each"] == "${local.lanes}"
    assert lanes["topic"] == '${google_pubsub_topic.topics["jobs"].id}'
    assert lanes["filter"] == "${each.value.filter}"
    assert lanes["ack_deadline_seconds"] == "${each.value.ack_deadline_s}"
    retry = one(lanes, "retry_policy")
    assert retry["minimum_backoff"] and retry["maximum_backoff"]
    dlq = one(lanes, "dead_letter_policy")
    assert dlq["dead_letter_topic"] == '${google_pubsub_topic.topics["dead_letter"].id}'
    assert dlq["max_delivery_attempts"] == "${each.value.max_delivery_attempts}"
    for name, body in subs.items():
        assert one(body, "expiration_policy")["ttl"] == "", name
        assert body.get("message_retention_duration"), name
    for lane in json.loads((TERRAFORM / "fleet.json").read_text(encoding="utf-8"))["lanes"]:
        assert 5 <= lane["max_delivery_attempts"] <= 100
        assert 10 <= lane["ack_deadline_s"] <= 600
        assert 0 <= lane["retry_min_backoff_s"] <= lane["retry_max_backoff_s"] <= 600


def test_dead_letter_topic_has_both_subscriptions() -> None:
    subs = resources("google_pubsub_subscription")
    dlq_topic = '${google_pubsub_topic.topics["dead_letter"].id}'
    assert subs["dead_letter_hold"]["topic"] == dlq_topic
    assert subs["dead_letter_hold"]["name"] == "${local.dead_letter_subscription}"
    assert subs["dead_letter_handler"]["topic"] == dlq_topic
    assert subs["dead_letter_handler"]["name"] == "${local.dead_letter_handler_subscription}"


def test_pubsub_service_agent_can_dead_letter() -> None:
    agent = locals_()["pubsub_service_agent"]
    assert "@gcp-sa-pubsub.iam.gserviceaccount.com" in agent
    topic_member = resources("google_pubsub_topic_iam_member")["dead_letter_publisher_agent"]
    assert topic_member["role"] == "roles/pubsub.publisher"
    assert topic_member["member"] == "${local.pubsub_service_agent}"
    assert "dead_letter" in topic_member["topic"]
    sub_member = resources("google_pubsub_subscription_iam_member")["lane_subscriber_agent"]
    assert sub_member["role"] == "roles/pubsub.subscriber"
    assert sub_member["for_each"] == "${local.lanes}"


def test_no_basic_roles_and_only_write_only_project_roles() -> None:
    for rtype, name, body in all_resources():
        assert rtype not in {"google_project_iam_binding", "google_project_iam_policy"}, (rtype, name)
        role = body.get("role", "")
        assert role not in BASIC_ROLES, (rtype, name, role)
    project_members = resources("google_project_iam_member")
    assert set(project_members) == {"worker_telemetry", "clients_results_subscriptions"}
    assert (
        project_members["worker_telemetry"]["for_each"]
        == '${toset(["roles/monitoring.metricWriter", "roles/logging.logWriter"])}'
    )
    # The clients' one project grant is the custom role: subscriptions only, no topic or bucket rights.
    assert project_members["clients_results_subscriptions"]["role"] == (
        "${google_project_iam_custom_role.results_subscriptions[0].id}"
    )
    custom = resources("google_project_iam_custom_role")["results_subscriptions"]
    assert custom["permissions"] == [
        "pubsub.subscriptions.consume",
        "pubsub.subscriptions.create",
        "pubsub.subscriptions.delete",
        "pubsub.subscriptions.get",
    ]
    iam_text = (TERRAFORM / "iam.tf").read_text(encoding="utf-8")
    roles = set(re.findall(r'"(roles/[\w.]+)"', iam_text))
    assert roles <= {
        "roles/pubsub.subscriber",
        "roles/pubsub.publisher",
        "roles/storage.objectViewer",
        "roles/storage.objectCreator",
        "roles/artifactregistry.reader",
        *PROJECT_ROLES_ALLOWED,
    }, roles


def test_buckets_are_private_with_lifecycle_and_optional_cmek() -> None:
    bucket = resources("google_storage_bucket")["buckets"]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["lifecycle_rule"]
    assert dynamic(bucket, "encryption") is not None


def test_spot_template_scheduling_is_consistent() -> None:
    template = resources("google_compute_region_instance_template")["worker"]
    scheduling = one(template, "scheduling")
    assert scheduling["provisioning_model"] == "${each.value.model}"
    assert scheduling["preemptible"] == "${each.value.preemptible}"
    assert scheduling["automatic_restart"] is False
    assert scheduling["on_host_maintenance"] == "TERMINATE"
    assert scheduling["instance_termination_action"] == "${each.value.termination}"
    provisioning = locals_()["provisioning"]
    spot = re.search(r"spot = \{(.*?)\}", provisioning, flags=re.DOTALL)
    assert spot, provisioning
    assert re.search(r'model\s*=\s*"SPOT"', spot.group(1))
    assert re.search(r"preemptible\s*=\s*true", spot.group(1))
    assert re.search(r'termination\s*=\s*"DELETE"', spot.group(1))
    assert template["name_prefix"]
    assert one(template, "lifecycle")["create_before_destroy"] is True


def test_template_is_private_shielded_and_carries_the_worker_config() -> None:
    template = resources("google_compute_region_instance_template")["worker"]
    nic = one(template, "network_interface")
    assert "access_config" not in nic and dynamic(nic, "access_config") is None
    shielded = one(template, "shielded_instance_config")
    assert shielded == {
        "enable_secure_boot": True,
        "enable_vtpm": True,
        "enable_integrity_monitoring": True,
    }
    assert dynamic(template, "guest_accelerator") is not None
    metadata = locals_()["instance_metadata"]
    for key in ("fleet-container-image", "fleet-env", "enable-oslogin", "block-project-ssh-keys"):
        assert key in metadata, key
    assert "var.container_image" in metadata
    assert one(template, "service_account")["email"] == "${google_service_account.worker.email}"


def test_mig_is_regional_balanced_and_never_redistributes() -> None:
    mig = resources("google_compute_region_instance_group_manager")["workers"]
    assert mig["distribution_policy_target_shape"] == "BALANCED"
    policy = one(mig, "update_policy")
    assert policy["instance_redistribution_type"] == "NONE"
    assert "target_size" not in mig, "the autoscaler owns the size"


def test_autoscaler_can_reach_zero() -> None:
    autoscaler = resources("google_compute_region_autoscaler")["workers"]
    policy = one(autoscaler, "autoscaling_policy")
    assert policy["min_replicas"] == 0
    # A CPU, load-balancing or per-instance policy would pin the group at >= 1 VM.
    assert "cpu_utilization" not in policy and dynamic(policy, "cpu_utilization") is None
    assert "load_balancing_utilization" not in policy
    assert "metric" not in policy, "metrics come from the per-group dynamic block only"
    metric = dynamic(policy, "metric")
    assert metric is not None
    content = one(metric, "content")
    assert content["filter"] == "${metric.value.filter}"
    assert content["single_instance_assignment"] == "${metric.value.assignment}"
    assert "target" not in content
    loc = locals_()
    # Every lane of fleet.json has its own Pub/Sub metric in each group (the rule: test_cloud_rules.py).
    lanes = {lane.name for lane in load_resources(TERRAFORM / "fleet.json").lanes}
    for by_lane in ("lane_backlog_metric", "lane_stall_metric"):
        assert set(loc[by_lane]) == lanes, by_lane
        assert all(str(m).startswith("pubsub.googleapis.com/subscription/") for m in loc[by_lane].values())
    assert "local.lane_backlog_metric[name]" in loc["spot_policies"]
    assert "local.lane_stall_metric[name]" in loc["fallback_policies"]
    for name in ("spot_policies", "fallback_policies"):
        # Per-group: every policy selects one pubsub_subscription time series by its id.
        assert 'resource.type = \\"pubsub_subscription\\"' in loc[name], name
        assert "resource.labels.subscription_id" in loc[name], name
        assert "gce_instance" not in loc[name], name
    assert "var.autoscaler_backlog_per_vm[name]" in loc["spot_policies"]


def test_autoscaler_schedules_scale_in_control_and_cooldown_use_the_variables() -> None:
    policy = one(resources("google_compute_region_autoscaler")["workers"], "autoscaling_policy")
    assert policy["cooldown_period"] == "${var.autoscaler_cooldown_period_s}"
    assert policy["max_replicas"] == "${each.value.max_replicas}"
    schedules = dynamic(policy, "scaling_schedules")
    assert schedules is not None
    content = one(schedules, "content")
    assert content["duration_sec"] == "${scaling_schedules.value.duration_s}"
    assert content["min_required_replicas"] == "${scaling_schedules.value.min_required_replicas}"
    control = one(policy, "scale_in_control")
    assert control["time_window_sec"] == "${var.autoscaler_scale_in_time_window_s}"
    assert one(control, "max_scaled_in_replicas")["fixed"] == "${var.autoscaler_scale_in_max_replicas}"
    assert "var.scaling_schedules" in locals_()["autoscaled"]


def test_network_has_private_google_access_nat_and_no_open_ingress() -> None:
    subnet = resources("google_compute_subnetwork")["workers"]
    assert subnet["private_ip_google_access"] is True
    assert "nat" in resources("google_compute_router_nat")
    for name, rule in resources("google_compute_firewall").items():
        if rule["direction"] == "INGRESS" and "allow" in rule:
            assert "0.0.0.0/0" not in rule["source_ranges"], name


def test_monitoring_dashboard_and_alerts() -> None:
    assert "fleet" in resources("google_monitoring_dashboard")
    alerts = resources("google_monitoring_alert_policy")
    assert {
        "oldest_unacked",
        "dead_letters",
        "failures",
        "worker_crash_loop",
        "at_max_with_growing_backlog",
    } <= set(alerts)
    dashboard = json.dumps(locals_()["dashboard_charts"])
    for word in ("Backlog", "Oldest unacked", "Worker VMs", "per second", "Dead letters", "Job latency"):
        assert word in dashboard, word
    for metric in ("job_latency_filter", "agent.googleapis.com/gpu/utilization", "local.triton_metric"):
        assert metric in dashboard, metric
    assert "REDUCE_PERCENTILE_${p}" in dashboard


def test_crash_loop_alert_counts_the_worker_units_restarts_per_vm() -> None:
    metric = resources("google_logging_metric")["worker_restarts"]
    # The log is the Ops Agent receiver's id; the unit and message are systemd's restart line.
    assert 'log_id(\\"fleet_units\\")' in json.dumps(metric["filter"])
    assert 'jsonPayload.UNIT=\\"worker.service\\"' in json.dumps(metric["filter"])
    assert "Scheduled restart job" in metric["filter"]
    alert = resources("google_monitoring_alert_policy")["worker_crash_loop"]
    threshold = one(one(alert, "conditions"), "condition_threshold")
    assert "google_logging_metric.worker_restarts.name" in threshold["filter"]
    assert threshold["threshold_value"] == "${var.alerts.restarts_per_10min}"
    assert one(threshold, "aggregations") == {"alignment_period": "600s", "per_series_aligner": "ALIGN_SUM"}


def test_at_max_alert_needs_both_a_full_group_and_a_growing_backlog() -> None:
    alert = resources("google_monitoring_alert_policy")["at_max_with_growing_backlog"]
    assert alert["for_each"] == "${local.provisioning}"
    assert alert["combiner"] == "AND"
    size, backlog = (one(c, "condition_threshold") for c in alert["conditions"])
    assert "instance_group/size" in size["filter"]
    assert size["comparison"] == "COMPARISON_GE"
    assert size["threshold_value"] == "${each.value.max_replicas}"
    assert "local.backlog_metric" in backlog["filter"]
    assert one(backlog, "aggregations")["per_series_aligner"] == "ALIGN_PERCENT_CHANGE"
    assert backlog["comparison"] == "COMPARISON_GT" and backlog["threshold_value"] == 0


def test_worker_env_names_are_worker_settings() -> None:
    """Every FLEET_* the module sets is one worker/runtime/settings.py reads (no silently ignored config)."""
    known = {option.env for option in settings.FIELDS}
    main = (TERRAFORM / "main.tf").read_text(encoding="utf-8")
    set_here = set(re.findall(r"\b(FLEET_[A-Z0-9_]+)\s*=", main)) | {"FLEET_INSTANCE_GROUP"}
    lanes = {
        f"FLEET_{lane.name.upper()}_SUBSCRIPTION" for lane in load_resources(TERRAFORM / "fleet.json").lanes
    }
    # Read by the client and `fleet dlq` rather than the worker; part of the shared env contract.
    not_worker = {"FLEET_JOBS_TOPIC", "FLEET_DEAD_LETTER_TOPIC", "FLEET_DEAD_LETTER_SUBSCRIPTION"}
    missing = (set_here | lanes) - known - not_worker
    assert not missing, f"set by Terraform but unknown to worker/runtime/settings.py: {sorted(missing)}"


def test_example_sets_the_image_in_one_line() -> None:
    main = TERRAFORM / "examples" / "minimal" / "main.tf"
    module = parse_hcl(main)["module"][0]["fleet"]
    assert module["source"] == "../.."
    assert set(module) >= {"source", "project_id", "region", "zones", "container_image", "artifact_registry"}
    # The image lives in the repository the example creates, in the example's region and project.
    assert module["container_image"] == (
        "${var.region}-docker.pkg.dev/${var.project_id}/${var.registry_repository}/worker:${var.image_tag}"
    )
    assert module["artifact_registry"] == {"create": True, "repository_id": "${var.registry_repository}"}
    assert module["zones"] == "${var.zones}"
    variables = blocks("variable", [main])
    assert "default" not in variables["zones"], "zones that have the GPU are the user's to state"
    assert "length(var.zones) > 0" in json.dumps(variables["zones"]["validation"])
    lines = [line for line in main.read_text(encoding="utf-8").splitlines() if "container_image" in line]
    assert len(lines) == 1
    tfvars = (main.parent / "terraform.tfvars.example").read_text(encoding="utf-8")
    for name in ("project_id", "region", "zones", "image_tag"):
        assert re.search(rf"^{name}\s*=", tfvars, flags=re.MULTILINE), name


def test_apis_are_enabled_before_anything_reads_them() -> None:
    """On a fresh project, data sources read at plan time would call APIs that are not enabled yet."""
    apis = locals_()["apis"]
    for api in (
        "artifactregistry",
        "cloudresourcemanager",
        "compute",
        "iam",
        "logging",
        "monitoring",
        "pubsub",
        "storage",
    ):
        assert f"{api}.googleapis.com" in apis, api
    for path in sorted(TERRAFORM.glob("*.tf")):
        for block in parse_hcl(path).get("data", []):
            for dtype, named in block.items():
                for name, body in named.items():
                    assert body.get("depends_on") == ["${google_project_service.apis}"], (dtype, name)
    # Resources that are first in their API's chain wait for the API too (the rest depend on them).
    first = {
        "google_service_account": "worker",
        "google_pubsub_topic": "topics",
        "google_storage_bucket": "buckets",
        "google_compute_network": "fleet",
        "google_artifact_registry_repository": "worker",
        "google_monitoring_dashboard": "fleet",
        "google_logging_metric": "worker_restarts",
        "google_project_iam_custom_role": "results_subscriptions",
    }
    for rtype, name in first.items():
        assert "${google_project_service.apis}" in resources(rtype)[name]["depends_on"], (rtype, name)


def test_worker_reads_allowed_input_buckets_and_pulls_from_the_registries() -> None:
    allowed = resources("google_storage_bucket_iam_member")["worker_allowed_inputs"]
    assert "var.worker.allowed_input_buckets" in allowed["for_each"]
    assert allowed["role"] == "roles/storage.objectViewer"
    assert allowed["member"] == "${local.worker_member}"
    registry = resources("google_artifact_registry_repository")["worker"]
    assert registry["count"] == "${var.artifact_registry.create ? 1 : 0}"
    assert registry["format"] == "DOCKER"
    assert one(registry, "docker_config")["immutable_tags"] == "${var.artifact_registry.immutable_tags}"
    reader = resources("google_artifact_registry_repository_iam_member")["worker"]
    assert reader["for_each"] == "${local.worker_registries}"
    assert reader["role"] == "roles/artifactregistry.reader"
    assert "google_artifact_registry_repository.worker[0].repository_id" in locals_()["worker_registries"]


def test_clients_get_exactly_what_the_client_uses() -> None:
    loc = locals_()
    topics = loc["client_topic_roles"]
    assert topics == {
        "jobs-publisher": {"topic": "jobs", "role": "roles/pubsub.publisher"},
        "results-subscriber": {"topic": "results", "role": "roles/pubsub.subscriber"},
    }
    assert loc["client_bucket_roles"] == {
        "inputs-creator": {"bucket": "inputs", "role": "roles/storage.objectCreator"},
        "inputs-viewer": {"bucket": "inputs", "role": "roles/storage.objectViewer"},
        "results-viewer": {"bucket": "results", "role": "roles/storage.objectViewer"},
    }
    assert resources("google_pubsub_topic_iam_member")["clients"]["member"] == "${each.value.member}"
    assert (
        resources("google_storage_bucket_iam_member")["clients"]["for_each"]
        == "${local.client_bucket_grants}"
    )
    members = resources("google_project_iam_member")["clients_results_subscriptions"]
    assert members["for_each"] == "${toset(var.client_principals)}"


def test_readme_tables_are_in_sync() -> None:
    spec = importlib.util.spec_from_file_location("readme_tables", TERRAFORM / "scripts" / "readme_tables.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run terraform/scripts/readme_tables.py"


def test_autohealing_probes_fleet_health_on_its_port_and_path() -> None:
    """A failed boot or a crash-looping worker is recreated: the MIG's health check is fleet-health's."""
    health = resources("google_compute_health_check")["worker"]
    probe = one(health, "http_health_check")
    assert probe["request_path"] == "/healthz"
    boot_health = (PACKER / "files" / "bin" / "fleet-health").read_text(encoding="utf-8")
    port = re.search(r'FLEET_HEALTH_PORT", "(\d+)"', boot_health)
    assert port and locals_()["health_port"] == int(port.group(1)) and probe["port"] == "${local.health_port}"
    assert 'self.path != "/healthz"' in boot_health
    for group in resources("google_compute_region_instance_group_manager").values():
        policy = one(group, "auto_healing_policies")
        assert policy["health_check"] == "${google_compute_health_check.worker.id}"
        assert policy["initial_delay_sec"] == "${var.autohealing_initial_delay_s}"
    rule = resources("google_compute_firewall")["health_checks"]
    assert rule["source_ranges"] == ["35.191.0.0/16", "130.211.0.0/22"]
    assert one(rule, "allow")["ports"] == ["${tostring(local.health_port)}"]
