# Worker VMs: a regional template per provisioning model (SPOT, and STANDARD for the optional
# fallback), a regional MIG for each, spread over the zones that have the GPU.

data "google_compute_image" "worker" {
  project = local.image_project
  family  = var.image_family

  depends_on = [google_project_service.apis]
}

locals {
  # fleet-health's port on the VM (FLEET_HEALTH_PORT's default); the firewall opens it to Google's probers.
  health_port = 8080

  # Registries that Private Google Access reaches (no NAT needed): Artifact Registry and gcr.io.
  image_host               = split("/", var.container_image)[0]
  image_on_google_registry = endswith(local.image_host, "-docker.pkg.dev") || local.image_host == "gcr.io" || endswith(local.image_host, ".gcr.io")

  # Resolved here rather than in the template: a new image in the family changes the template, which
  # (create_before_destroy + the MIG update policy) rolls it out; a family URL would drift silently.
  worker_image = data.google_compute_image.worker.self_link

  # VMs a rollout creates beyond the group's size (update_policy below).
  max_surge = max(length(var.zones), 3)

  # GPUs per VM: `gpu` for general-purpose types; accelerator-optimized types carry theirs.
  accelerator_optimized_gpus = {
    "g2-standard-4"  = 1
    "g2-standard-8"  = 1
    "g2-standard-12" = 1
    "g2-standard-16" = 1
    "g2-standard-24" = 2
    "g2-standard-32" = 1
    "g2-standard-48" = 4
    "g2-standard-96" = 8
    "a2-highgpu-1g"  = 1
    "a2-highgpu-2g"  = 2
    "a2-highgpu-4g"  = 4
    "a2-highgpu-8g"  = 8
  }
  gpus_per_vm = var.gpu != null ? var.gpu.count : lookup(local.accelerator_optimized_gpus, var.machine_type, 1)

  provisioning = merge(
    {
      spot = {
        model        = "SPOT"
        preemptible  = true
        termination  = "DELETE"
        base_name    = "${local.prefix}-worker"
        max_replicas = var.autoscaler_max_replicas
      }
    },
    var.on_demand_fallback.enabled ? {
      on-demand = {
        model        = "STANDARD"
        preemptible  = false
        termination  = null
        base_name    = "${local.prefix}-worker-od"
        max_replicas = var.on_demand_fallback.max_replicas
      }
    } : {},
  )
}

resource "google_compute_region_instance_template" "worker" {
  for_each = local.provisioning

  project     = var.project_id
  region      = var.region
  name_prefix = "${each.value.base_name}-"
  description = "inference-fleet worker (${each.value.model}): Triton + worker containers on the baked image."

  machine_type = var.machine_type
  tags         = ["${local.prefix}-worker"]
  labels       = merge(local.labels, { provisioning = lower(each.value.model) })
  metadata     = local.instance_metadata[each.key]

  disk {
    boot         = true
    auto_delete  = true
    source_image = local.worker_image
    disk_size_gb = var.boot_disk.size_gb
    disk_type    = var.boot_disk.type
    labels       = local.labels

    dynamic "disk_encryption_key" {
      for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
      content {
        kms_key_self_link = disk_encryption_key.value
      }
    }
  }

  dynamic "guest_accelerator" {
    for_each = var.gpu == null ? [] : [var.gpu]
    content {
      type  = guest_accelerator.value.type
      count = guest_accelerator.value.count
    }
  }

  # No access_config block: no external IP.
  network_interface {
    subnetwork = local.subnetwork
  }

  service_account {
    email  = google_service_account.worker.email
    scopes = ["cloud-platform"]
  }

  scheduling {
    provisioning_model = each.value.model
    preemptible        = each.value.preemptible
    automatic_restart  = false
    # GPUs cannot live-migrate.
    on_host_maintenance = "TERMINATE"
    # Spot: a preempted VM is deleted, not stopped; the MIG recreates capacity where it exists.
    instance_termination_action = each.value.termination
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  lifecycle {
    create_before_destroy = true

    # No external IP: the VM reaches Google APIs (Pub/Sub, GCS, Monitoring, Artifact Registry at
    # *-docker.pkg.dev and gcr.io) only through Private Google Access on its subnetwork, and any other
    # registry only through Cloud NAT (cloud.google.com/vpc/docs/private-google-access,
    # cloud.google.com/artifact-registry/docs/securing-with-vpc-sc).
    precondition {
      condition     = var.network.create || try(data.google_compute_subnetwork.provided[0].private_ip_google_access, false)
      error_message = "network.subnetwork must have Private Google Access on: the workers have no external IP and reach Pub/Sub, GCS and Artifact Registry only through it."
    }
    precondition {
      condition     = local.image_on_google_registry || (var.network.create ? var.network.enable_nat : var.network.external_egress)
      error_message = "container_image is not on Artifact Registry or gcr.io: VMs without an external IP pull it only through Cloud NAT (network.enable_nat, or network.external_egress = true for a provided subnetwork that has NAT)."
    }
  }
}

# The subnetwork the workers join when the module does not create one: checked for Private Google Access.
data "google_compute_subnetwork" "provided" {
  count = var.network.create ? 0 : 1

  self_link = var.network.subnetwork

  depends_on = [google_project_service.apis]
}

resource "google_compute_region_instance_group_manager" "workers" {
  for_each = local.provisioning

  project            = var.project_id
  region             = var.region
  name               = "${each.value.base_name}-mig"
  base_instance_name = each.value.base_name
  description        = "inference-fleet ${lower(each.value.model)} workers; size set by the autoscaler."

  distribution_policy_zones = length(var.zones) > 0 ? var.zones : null
  # BALANCED follows GPU capacity across zones instead of insisting on an even spread (and requires
  # instance redistribution to be off, which also keeps the MIG from deleting VMs mid-job to rebalance).
  distribution_policy_target_shape = "BALANCED"

  version {
    name              = "primary"
    instance_template = google_compute_region_instance_template.worker[each.key].id
  }

  update_policy {
    type                           = var.update_policy_type
    minimal_action                 = "REPLACE"
    most_disruptive_allowed_action = "REPLACE"
    instance_redistribution_type   = "NONE"
    replacement_method             = "SUBSTITUTE"
    # Regional MIGs need 0 or at least one per zone; surge first so the backlog keeps being served.
    # The surge VMs come on top of max_replicas: the GPU quota must cover both (gpu_quota_required).
    max_surge_fixed       = local.max_surge
    max_unavailable_fixed = 0
  }

  # fleet-health (packer/files/bin/fleet-health) answers 200 on /healthz only once the boot prepared the
  # models and the worker container runs: a failed boot (unpullable image, invalid package, no precision
  # within tolerance) or a crash-looping worker is recreated instead of idling while the backlog grows.
  auto_healing_policies {
    health_check      = google_compute_health_check.worker.id
    initial_delay_sec = var.autohealing_initial_delay_s
  }

  instance_lifecycle_policy {
    # A VM whose worker failed to start is recreated rather than left holding a GPU.
    default_action_on_failure = "REPAIR"
    force_update_on_repair    = "YES"
  }

  # A new template (new image or image tag, create_before_destroy + name_prefix) replaces the VMs
  # surge-first; Terraform deletes the old template after this resource's update returns, and the API
  # refuses while any VM of the group still runs from it (`resourceInUseByAnotherResource`,
  # hashicorp/terraform-provider-google#1448). So the update returns only once every VM runs the new
  # version (UPDATED: version target reached and the group stable). At size zero that is at once.
  wait_for_instances        = true
  wait_for_instances_status = "UPDATED"

  timeouts {
    create = "${var.rollout_timeout_min}m"
    update = "${var.rollout_timeout_min}m"
  }

  depends_on = [
    google_pubsub_subscription_iam_member.worker,
    google_storage_bucket_iam_member.worker,
    google_compute_router_nat.nat,
  ]
}

resource "google_compute_health_check" "worker" {
  project     = var.project_id
  name        = "${local.prefix}-worker-health"
  description = "inference-fleet worker VM: boot prepared the models and the worker container runs (fleet-health)."

  check_interval_sec  = 10
  timeout_sec         = 5
  healthy_threshold   = 1
  unhealthy_threshold = 3

  http_health_check {
    port         = local.health_port
    request_path = "/healthz"
  }

  log_config {
    enable = true
  }

  depends_on = [google_project_service.apis]
}
