# One dashboard (backlog per lane, oldest unacked age, VMs, jobs/s, failures, dead letters) and alert
# policies for jobs piling up, dead letters and failures.

locals {
  monitored_subscriptions = merge(
    { for name, lane in local.lanes : name => lane.id },
    { dead-letter = local.dead_letter_subscription },
  )

  subscription_filter = { for k, id in local.monitored_subscriptions : k => "resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${id}\"" }

  jobs_completed_metric = "custom.googleapis.com/inference_fleet/jobs_completed"
  failures_filter       = "metric.type=\"${local.jobs_completed_metric}\" AND metric.labels.status=\"failed\" AND resource.type=\"generic_node\""

  dashboard_charts = [
    {
      title  = "Backlog per lane (undelivered messages)"
      series = [for k in keys(local.lanes) : { label = k, filter = "metric.type=\"${local.backlog_metric}\" AND ${local.subscription_filter[k]}", aligner = "ALIGN_MAX" }]
    },
    {
      title  = "Oldest unacked message age (s)"
      series = [for k in keys(local.lanes) : { label = k, filter = "metric.type=\"${local.age_metric}\" AND ${local.subscription_filter[k]}", aligner = "ALIGN_MAX" }]
    },
    {
      title = "Worker VMs"
      series = [for key, p in local.provisioning : {
        label   = key
        filter  = "metric.type=\"compute.googleapis.com/instance_group/size\" AND resource.type=\"instance_group\" AND resource.labels.instance_group_name=\"${p.base_name}-mig\""
        aligner = "ALIGN_MAX"
      }]
    },
    {
      title  = "Jobs acked per second"
      series = [for k in keys(local.lanes) : { label = k, filter = "metric.type=\"pubsub.googleapis.com/subscription/ack_message_count\" AND ${local.subscription_filter[k]}", aligner = "ALIGN_RATE" }]
    },
    {
      title  = "Jobs finished per second, by status (worker metric)"
      series = [for st in ["succeeded", "failed", "expired"] : { label = st, filter = "metric.type=\"${local.jobs_completed_metric}\" AND metric.labels.status=\"${st}\" AND resource.type=\"generic_node\"", aligner = "ALIGN_RATE" }]
    },
    {
      title = "Dead letters"
      series = [
        { label = "held", filter = "metric.type=\"${local.backlog_metric}\" AND ${local.subscription_filter["dead-letter"]}", aligner = "ALIGN_MAX" },
        { label = "forwarded/s", filter = "metric.type=\"pubsub.googleapis.com/subscription/dead_letter_message_count\" AND resource.type=\"pubsub_subscription\"", aligner = "ALIGN_RATE" },
      ]
    },
  ]

  dashboard = {
    displayName = "inference-fleet (${local.prefix})"
    mosaicLayout = {
      columns = 12
      tiles = [for i, chart in local.dashboard_charts : {
        xPos   = (i % 2) * 6
        yPos   = floor(i / 2) * 4
        width  = 6
        height = 4
        widget = {
          title = chart.title
          xyChart = {
            dataSets = [for s in chart.series : {
              plotType        = "LINE"
              legendTemplate  = s.label
              timeSeriesQuery = { timeSeriesFilter = { filter = s.filter, aggregation = { alignmentPeriod = "60s", perSeriesAligner = s.aligner } } }
            }]
          }
        }
      }]
    }
  }
}

resource "google_monitoring_dashboard" "fleet" {
  project        = var.project_id
  dashboard_json = jsonencode(local.dashboard)

  depends_on = [google_project_service.apis]
}

# The worker exports custom.googleapis.com/inference_fleet/jobs_completed{status} (worker/runtime/telemetry.py).
# Declared here so the alert policy can be created before the first VM has written a point.
resource "google_monitoring_metric_descriptor" "jobs_completed" {
  project      = var.project_id
  type         = local.jobs_completed_metric
  display_name = "inference-fleet jobs completed"
  description  = "Jobs finished by a worker, by status (succeeded, failed, expired); cumulative per worker process."
  metric_kind  = "CUMULATIVE"
  value_type   = "INT64"
  unit         = "1"

  labels {
    key         = "status"
    value_type  = "STRING"
    description = "succeeded, failed or expired."
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "oldest_unacked" {
  for_each = local.lanes

  project               = var.project_id
  display_name          = "inference-fleet: ${each.key} jobs waiting > ${var.alerts.oldest_unacked_age_s[each.key]} s"
  combiner              = "OR"
  notification_channels = var.alerts.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "oldest unacked message age on ${each.value.id}"
    condition_threshold {
      filter          = "metric.type=\"${local.age_metric}\" AND ${local.subscription_filter[each.key]}"
      comparison      = "COMPARISON_GT"
      threshold_value = var.alerts.oldest_unacked_age_s[each.key]
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Jobs on `${each.value.id}` are older than the threshold. Check the worker group size and its autoscaler (spot stock-out? `on_demand_fallback`), VM boot logs, and Triton health."
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  project               = var.project_id
  display_name          = "inference-fleet: dead-lettered jobs"
  combiner              = "OR"
  notification_channels = var.alerts.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "messages held on ${local.dead_letter_subscription}"
    condition_threshold {
      filter          = "metric.type=\"${local.backlog_metric}\" AND ${local.subscription_filter["dead-letter"]}"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "60s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Jobs exhausted their delivery attempts. Inspect with `fleet dlq list`, fix the cause, then `fleet dlq replay`."
  }
}

resource "google_monitoring_alert_policy" "failures" {
  project               = var.project_id
  display_name          = "inference-fleet: failed jobs > ${var.alerts.failures_per_5min} per 5 min"
  combiner              = "OR"
  notification_channels = var.alerts.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "failed jobs reported by the workers"
    condition_threshold {
      filter          = local.failures_filter
      comparison      = "COMPARISON_GT"
      threshold_value = var.alerts.failures_per_5min
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Workers report failed jobs. The `error.code` in the worker logs and in results/<job_id>.json tells permanent input errors from infrastructure trouble."
  }

  depends_on = [google_monitoring_metric_descriptor.jobs_completed]
}
