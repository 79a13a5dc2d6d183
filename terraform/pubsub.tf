# Topics and subscriptions. Every lane subscription dead-letters into the DLQ topic, and the DLQ topic has
# its own subscriptions: a message published to a topic without a subscription is lost.

locals {
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic" "topics" {
  for_each = local.topics

  project      = var.project_id
  name         = each.value
  kms_key_name = var.kms_key_name
  labels       = local.labels

  # Jobs wait on their subscriptions, not on the topic; the DLQ topic keeps a copy for replays.
  message_retention_duration = each.key == "dead_letter" ? "604800s" : null

  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.pubsub_agent]
}

resource "google_pubsub_subscription" "lanes" {
  for_each = local.lanes

  project = var.project_id
  name    = each.value.id
  topic   = google_pubsub_topic.topics["jobs"].id
  filter  = each.value.filter
  labels  = merge(local.labels, { lane = each.key })

  ack_deadline_seconds       = each.value.ack_deadline_s
  message_retention_duration = "${each.value.message_retention_s}s"
  # Exactly-once delivery would make acks fail on long jobs; result writes are idempotent instead
  # (ifGenerationMatch=0), so at-least-once is what the worker expects.
  enable_exactly_once_delivery = false

  retry_policy {
    minimum_backoff = "${each.value.retry_min_backoff_s}s"
    maximum_backoff = "${each.value.retry_max_backoff_s}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.topics["dead_letter"].id
    max_delivery_attempts = each.value.max_delivery_attempts
  }

  # Never expire: an idle fleet (zero VMs, no pulls) must not lose its subscriptions after 31 days.
  expiration_policy {
    ttl = ""
  }
}

# Kept for inspection and `fleet dlq list|replay`; nobody acks it automatically.
resource "google_pubsub_subscription" "dead_letter_hold" {
  project = var.project_id
  name    = local.dead_letter_subscription
  topic   = google_pubsub_topic.topics["dead_letter"].id
  labels  = merge(local.labels, { lane = "dead-letter" })

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  retain_acked_messages      = true

  expiration_policy {
    ttl = ""
  }
}

# Fed to `fleet dlq-handler`, which answers each dead-lettered job with a DEAD_LETTERED failure.
resource "google_pubsub_subscription" "dead_letter_handler" {
  project = var.project_id
  name    = local.dead_letter_handler_subscription
  topic   = google_pubsub_topic.topics["dead_letter"].id
  labels  = merge(local.labels, { lane = "dead-letter-handler" })

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }
}

# The Pub/Sub service agent forwards undeliverable messages: it must publish to the DLQ topic and
# subscribe (to ack the original) on every source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher_agent" {
  project = var.project_id
  topic   = google_pubsub_topic.topics["dead_letter"].name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "lane_subscriber_agent" {
  for_each = local.lanes

  project      = var.project_id
  subscription = google_pubsub_subscription.lanes[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}
