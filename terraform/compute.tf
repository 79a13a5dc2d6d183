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

  # Resolved here rather than in the template: a new image in the family changes the template, which
  # (create_before_destroy + the MIG update policy) rolls it out; a family URL would drift silently.
  worker_image = data.google_compute_image.worker.self_link

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
  }
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
    max_surge_fixed       = max(length(var.zones), 3)
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

  # Creating the group must not wait for VMs: at size zero there are none.
  wait_for_instances = false

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
