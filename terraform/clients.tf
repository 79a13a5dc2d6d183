# What a client (worker/client: `fleet submit`, FleetClient) needs, for each of `client_principals`:
#   publish jobs          -> publisher on the jobs topic
#   upload inputs         -> objectCreator + objectViewer on the inputs bucket (it skips inputs already there)
#   read results          -> objectViewer on the results bucket (result objects, and the sweep for jobs
#                            answered before its subscription existed)
#   its own notifications -> subscriber on the results topic (attach a subscription to it) and a custom
#                            role with subscriptions.create/get/consume/delete on the project.
# Pub/Sub evaluates no IAM condition on resource names, so the last grant cannot be narrowed to the
# client's own `<results topic>-client-<id>` subscriptions: it also reaches the lane subscriptions.
# Grant it to trusted publishers only, or pre-create per-client subscriptions outside the module.

locals {
  client_topic_roles = {
    jobs-publisher     = { topic = "jobs", role = "roles/pubsub.publisher" }
    results-subscriber = { topic = "results", role = "roles/pubsub.subscriber" }
  }
  client_bucket_roles = {
    inputs-creator = { bucket = "inputs", role = "roles/storage.objectCreator" }
    inputs-viewer  = { bucket = "inputs", role = "roles/storage.objectViewer" }
    results-viewer = { bucket = "results", role = "roles/storage.objectViewer" }
  }
  client_topic_grants = merge({}, [for m in var.client_principals : {
    for k, g in local.client_topic_roles : "${m}/${k}" => merge(g, { member = m })
  }]...)
  client_bucket_grants = merge({}, [for m in var.client_principals : {
    for k, g in local.client_bucket_roles : "${m}/${k}" => merge(g, { member = m })
  }]...)
}

resource "google_pubsub_topic_iam_member" "clients" {
  for_each = local.client_topic_grants

  project = var.project_id
  topic   = google_pubsub_topic.topics[each.value.topic].name
  role    = each.value.role
  member  = each.value.member
}

resource "google_storage_bucket_iam_member" "clients" {
  for_each = local.client_bucket_grants

  bucket = google_storage_bucket.buckets[each.value.bucket].name
  role   = each.value.role
  member = each.value.member
}

resource "google_project_iam_custom_role" "results_subscriptions" {
  count = length(var.client_principals) > 0 ? 1 : 0

  project     = var.project_id
  role_id     = "${replace(local.prefix, "-", "_")}_results_subscriptions"
  title       = "inference-fleet client: own results subscriptions"
  description = "Create, read, pull from and delete the client's filtered subscription on the results topic."
  permissions = [
    "pubsub.subscriptions.consume",
    "pubsub.subscriptions.create",
    "pubsub.subscriptions.delete",
    "pubsub.subscriptions.get",
  ]

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "clients_results_subscriptions" {
  for_each = toset(var.client_principals)

  project = var.project_id
  role    = google_project_iam_custom_role.results_subscriptions[0].id
  member  = each.value
}
