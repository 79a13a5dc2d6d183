# The worker identity: resource-level roles only. The two project-level bindings (metric writer, log
# writer) are write-only predefined roles that have no resource-level form; no basic roles anywhere.

resource "google_service_account" "worker" {
  project      = var.project_id
  account_id   = "${local.prefix}-worker"
  display_name = "inference-fleet worker VMs"
  description  = "Pulls jobs, reads inputs, writes results and notifications; nothing else."

  depends_on = [google_project_service.apis]
}

locals {
  worker_member = "serviceAccount:${google_service_account.worker.email}"

  worker_subscriptions = merge(
    { for name, lane in local.lanes : name => google_pubsub_subscription.lanes[name].name },
    {
      dead-letter-handler = google_pubsub_subscription.dead_letter_handler.name
      # `fleet dlq list|replay` runs on a worker VM or with an operator's own credentials.
      dead-letter-hold = google_pubsub_subscription.dead_letter_hold.name
    },
  )
  worker_publish_topics = {
    results     = google_pubsub_topic.topics["results"].name
    dead_letter = google_pubsub_topic.topics["dead_letter"].name
    # `fleet dlq replay` republishes held jobs to the jobs topic.
    jobs = google_pubsub_topic.topics["jobs"].name
  }
  worker_bucket_roles = {
    inputs-viewer   = { bucket = "inputs", role = "roles/storage.objectViewer" }
    results-creator = { bucket = "results", role = "roles/storage.objectCreator" }
    # Reading back a result is needed to tell "already written by a previous attempt" from a failure.
    results-viewer  = { bucket = "results", role = "roles/storage.objectViewer" }
    engines-viewer  = { bucket = "engines", role = "roles/storage.objectViewer" }
    engines-creator = { bucket = "engines", role = "roles/storage.objectCreator" }
  }
}

resource "google_pubsub_subscription_iam_member" "worker" {
  for_each = local.worker_subscriptions

  project      = var.project_id
  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = local.worker_member
}

resource "google_pubsub_topic_iam_member" "worker" {
  for_each = local.worker_publish_topics

  project = var.project_id
  topic   = each.value
  role    = "roles/pubsub.publisher"
  member  = local.worker_member
}

resource "google_storage_bucket_iam_member" "worker" {
  for_each = local.worker_bucket_roles

  bucket = google_storage_bucket.buckets[each.value.bucket].name
  role   = each.value.role
  member = local.worker_member
}

# Buckets besides the inputs bucket that jobs may name (FLEET_ALLOWED_INPUT_BUCKETS): read only, and only
# those. They may live in other projects; whoever owns them must let this module set their IAM.
resource "google_storage_bucket_iam_member" "worker_allowed_inputs" {
  for_each = toset([for b in var.worker.allowed_input_buckets : b if b != local.buckets.inputs])

  bucket = each.value
  role   = "roles/storage.objectViewer"
  member = local.worker_member
}

resource "google_project_iam_member" "worker_telemetry" {
  for_each = toset(["roles/monitoring.metricWriter", "roles/logging.logWriter"])

  project = var.project_id
  role    = each.value
  member  = local.worker_member
}

locals {
  # The listed repositories plus the one the module creates; keys are known at plan time.
  worker_registries = merge(
    { for r in var.artifact_registry_repositories : "${r.location}/${r.repository}" => r },
    var.artifact_registry.create ? {
      "${local.registry_location}/${var.artifact_registry.repository_id}" = {
        location   = local.registry_location
        repository = google_artifact_registry_repository.worker[0].repository_id
        project    = var.project_id
      }
    } : {},
  )
}

resource "google_artifact_registry_repository_iam_member" "worker" {
  for_each = local.worker_registries

  project    = coalesce(each.value.project, var.project_id)
  location   = each.value.location
  repository = each.value.repository
  role       = "roles/artifactregistry.reader"
  member     = local.worker_member
}
