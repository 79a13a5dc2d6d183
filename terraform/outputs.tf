output "jobs_topic" {
  description = "Topic clients publish jobs to (set the `priority` attribute to route to a lane)."
  value       = google_pubsub_topic.topics["jobs"].id
}

output "results_topic" {
  description = "Topic that carries one notification per finished job."
  value       = google_pubsub_topic.topics["results"].id
}

output "dead_letter_topic" {
  description = "Topic that receives jobs after max_delivery_attempts."
  value       = google_pubsub_topic.topics["dead_letter"].id
}

output "lane_subscriptions" {
  description = "Lane name => subscription id the workers pull."
  value       = { for name, sub in google_pubsub_subscription.lanes : name => sub.id }
}

output "dead_letter_subscriptions" {
  description = "The dead-letter topic's subscriptions: `hold` (inspection and replay) and `handler` (failure notifications)."
  value = {
    hold    = google_pubsub_subscription.dead_letter_hold.id
    handler = google_pubsub_subscription.dead_letter_handler.id
  }
}

output "input_bucket" {
  description = "Bucket clients upload drawings to (input_uri = gs://<bucket>/<object>)."
  value       = google_storage_bucket.buckets["inputs"].name
}

output "results_bucket" {
  description = "Bucket holding results/<job_id>.json, written once per job."
  value       = google_storage_bucket.buckets["results"].name
}

output "engines_bucket" {
  description = "Bucket caching TensorRT engines keyed by compute capability and TensorRT version."
  value       = google_storage_bucket.buckets["engines"].name
}

output "worker_service_account" {
  description = "Email of the worker VMs' service account."
  value       = google_service_account.worker.email
}

output "instance_groups" {
  description = "Provisioning model (spot, on-demand) => regional managed instance group self link."
  value       = { for key, mig in google_compute_region_instance_group_manager.workers : key => mig.instance_group }
}

output "instance_templates" {
  description = "Provisioning model => regional instance template currently in use."
  value       = { for key, t in google_compute_region_instance_template.worker : key => t.self_link }
}

output "autoscalers" {
  description = "Provisioning model => autoscaler id."
  value       = { for key, a in google_compute_region_autoscaler.workers : key => a.id }
}

output "worker_env" {
  description = "The environment the worker container receives (from instance metadata `fleet-env`)."
  value       = local.worker_env
}

output "dashboard_id" {
  description = "Cloud Monitoring dashboard id."
  value       = google_monitoring_dashboard.fleet.id
}

output "subnetwork" {
  description = "Subnetwork of the worker VMs."
  value       = local.subnetwork
}

output "artifact_registry_repository" {
  description = "Docker repository path (`LOCATION-docker.pkg.dev/PROJECT/REPOSITORY`) when `artifact_registry.create`; null otherwise."
  value       = var.artifact_registry.create ? "${local.registry_location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.worker[0].repository_id}" : null
}

output "client_env" {
  description = "The FLEET_* resource names a client reads (worker/shared/environment.py), for `fleet submit` and FleetClient.from_env."
  value = {
    GOOGLE_CLOUD_PROJECT = var.project_id
    FLEET_JOBS_TOPIC     = local.topics.jobs
    FLEET_RESULTS_TOPIC  = local.topics.results
    FLEET_INPUT_BUCKET   = local.buckets.inputs
    FLEET_RESULTS_BUCKET = local.buckets.results
  }
}

output "gpu_quota_required" {
  description = "GPUs to request before the first apply (docs/deploy.md step 2): each group at its max size plus the VMs a rollout adds on top (max_surge). `preemptible_region` counts against the region's preemptible GPU quota (spot), `on_demand_region` against its GPU quota (fallback group only), `all_regions` against GPUS_ALL_REGIONS; vCPU quota follows the machine type times the same VM counts (`vms`)."
  value = {
    gpus_per_vm        = local.gpus_per_vm
    max_surge          = local.max_surge
    vms                = { for key, p in local.provisioning : key => p.max_replicas + local.max_surge }
    preemptible_region = (var.autoscaler_max_replicas + local.max_surge) * local.gpus_per_vm
    on_demand_region   = var.on_demand_fallback.enabled ? (var.on_demand_fallback.max_replicas + local.max_surge) * local.gpus_per_vm : 0
    all_regions        = sum([for p in values(local.provisioning) : (p.max_replicas + local.max_surge) * local.gpus_per_vm])
  }
}
