# One dashboard (backlog per lane, oldest unacked age, VMs, jobs/s, failures, dead letters, job latency,
# GPU and Triton utilisation) and alert policies for jobs piling up, dead letters, failures, a
# crash-looping worker and a group stuck at its max size while the backlog grows.

locals {
  monitored_subscriptions = merge(
    { for name, lane in local.lanes : name => lane.id },
    { dead-letter = local.dead_letter_subscription },
  )

  subscription_filter = { for k, id in local.monitored_subscriptions : k => "resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${id}\"" }

  jobs_completed_metric = "custom.googleapis.com/inference_fleet/jobs_completed"
  failures_filter       = "metric.type=\"${local.jobs_completed_metric}\" AND metric.labels.status=\"failed\" AND resource.type=\"generic_node\""
  # A distribution per worker process (worker/runtime/telemetry.py); percentiles are taken across workers.
  job_latency_filter = "metric.type=\"custom.googleapis.com/inference_fleet/job_latency_ms\" AND resource.type=\"generic_node\""
  # The fleet's VMs carry the module's labels (instance template), so GCE metrics select them by label.
  fleet_vms = "resource.type=\"gce_instance\" AND metadata.user_labels.app=\"inference-fleet\""
  # Ops Agent's Prometheus receiver writes Triton's metrics (packer/files/ops-agent/config.yaml) as
  # prometheus.googleapis.com/<name>/<kind> on the prometheus_target resource.
  triton_metric = { for name, kind in {
    gpu_utilization = "nv_gpu_utilization/gauge"
    inferences      = "nv_inference_count/counter"
    queue_us        = "nv_inference_queue_duration_us/counter"
    compute_us      = "nv_inference_compute_infer_duration_us/counter"
  } : name => "metric.type=\"prometheus.googleapis.com/${kind}\" AND resource.type=\"prometheus_target\"" }

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
    {
      title  = "Job latency, published to answered (ms, worker metric)"
      series = [for p in ["50", "95", "99"] : { label = "p${p}", filter = local.job_latency_filter, aligner = "ALIGN_DELTA", reducer = "REDUCE_PERCENTILE_${p}" }]
    },
    {
      title = "GPU utilisation (%, Ops Agent NVML, per VM)"
      series = [
        { label = "$${resource.labels.instance_id}", filter = "metric.type=\"agent.googleapis.com/gpu/utilization\" AND ${local.fleet_vms}", aligner = "ALIGN_MEAN" },
      ]
    },
    {
      title = "Triton GPU utilisation (0-1, per VM)"
      series = [
        { label = "$${resource.labels.instance}", filter = local.triton_metric.gpu_utilization, aligner = "ALIGN_MEAN" },
      ]
    },
    {
      title = "Triton inferences/s and time per second spent queued and computing (us/s)"
      series = [
        { label = "inferences/s", filter = local.triton_metric.inferences, aligner = "ALIGN_RATE", reducer = "REDUCE_SUM" },
        { label = "queue us/s", filter = local.triton_metric.queue_us, aligner = "ALIGN_RATE", reducer = "REDUCE_SUM" },
        { label = "compute us/s", filter = local.triton_metric.compute_us, aligner = "ALIGN_RATE", reducer = "REDUCE_SUM" },
      ]
    },
    {
      # The worker's lease-age watchdog (worker/runtime/pipeline/watchdog.py): jobs held in a stage past its budget.
      title  = "Jobs held past their stage budget, per minute, by stage (worker watchdog)"
      series = [for st in ["fetch", "probe", "preprocess", "infer", "answer"] : { label = st, filter = "metric.type=\"custom.googleapis.com/inference_fleet/jobs_overdue\" AND metric.labels.stage=\"${st}\" AND resource.type=\"generic_node\"", aligner = "ALIGN_DELTA", reducer = "REDUCE_SUM" }]
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
              timeSeriesQuery = { timeSeriesFilter = { filter = s.filter, aggregation = {
                alignmentPeriod    = "60s"
                perSeriesAligner   = s.aligner
                crossSeriesReducer = lookup(s, "reducer", "REDUCE_NONE")
              } } }
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

# An alert policy on a metric this apply creates fails until Monitoring can find the metric: `Error 404:
# Cannot find metric(s) that match type = ... If a metric was created recently, it could take up to 10
# minutes to become available` (hashicorp/terraform-provider-google#11102, open since 2022). depends_on
# orders the API calls but cannot wait for that; this sleep does, on the apply that creates (or recreates)
# the metrics, and costs nothing on later applies.
resource "time_sleep" "created_metrics_usable" {
  create_duration = "${var.created_metric_wait_s}s"

  triggers = {
    worker_restarts = google_logging_metric.worker_restarts.id
    jobs_completed  = google_monitoring_metric_descriptor.jobs_completed.id
  }
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
  depends_on = [google_project_service.apis]
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
  depends_on = [google_project_service.apis]
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

  depends_on = [time_sleep.created_metrics_usable]
}

# --- a crash-looping worker ------------------------------------------------------------------------------
# systemd restarts worker.service (Restart=always, at most 10 starts per 10 min); the Ops Agent ships the
# fleet units' journal (receiver fleet_units), and this log-based metric counts the restarts per VM.
resource "google_logging_metric" "worker_restarts" {
  project     = var.project_id
  name        = "${local.prefix}-worker-restarts"
  description = "systemd restarts of the worker container unit, per VM (journal via the Ops Agent)."
  filter      = "resource.type=\"gce_instance\" AND log_id(\"fleet_units\") AND jsonPayload.UNIT=\"worker.service\" AND jsonPayload.MESSAGE:\"Scheduled restart job\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_alert_policy" "worker_crash_loop" {
  project               = var.project_id
  display_name          = "inference-fleet: worker restarted > ${var.alerts.restarts_per_10min} times in 10 min on a VM"
  combiner              = "OR"
  notification_channels = var.alerts.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "worker.service restarts per VM"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.worker_restarts.name}\" AND resource.type=\"gce_instance\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alerts.restarts_per_10min
      duration        = "0s"
      aggregations {
        alignment_period   = "600s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The worker container keeps exiting on one VM. Read `/var/log/fleet/worker.log` in Logging (log `fleet_worker`) for the exit reason: an unpullable image, a bad FLEET_* setting, Triton not ready, or a failing model package. After 10 starts in 10 min systemd gives up and the MIG repairs the VM."
  }

  depends_on = [time_sleep.created_metrics_usable]
}

# --- at max size while the backlog grows ---------------------------------------------------------------
# Both at once (AND): the group has sat at its max replicas for at_max_for_s, and a lane's undelivered
# count grew over the same window. More VMs cannot be added, so raise the max, add the on-demand fallback
# or look for slow workers.
resource "google_monitoring_alert_policy" "at_max_with_growing_backlog" {
  for_each = local.provisioning

  project               = var.project_id
  display_name          = "inference-fleet: ${each.key} group at max (${each.value.max_replicas}) and the backlog grows"
  combiner              = "AND"
  notification_channels = var.alerts.notification_channels
  user_labels           = local.labels

  conditions {
    display_name = "${each.value.base_name}-mig at ${each.value.max_replicas} VMs"
    condition_threshold {
      filter          = "metric.type=\"compute.googleapis.com/instance_group/size\" AND resource.type=\"instance_group\" AND resource.labels.instance_group_name=\"${each.value.base_name}-mig\""
      comparison      = "COMPARISON_GE"
      threshold_value = each.value.max_replicas
      duration        = "${var.alerts.at_max_for_s}s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MIN"
      }
    }
  }

  conditions {
    display_name = "a lane's undelivered messages grew"
    condition_threshold {
      filter          = "metric.type=\"${local.backlog_metric}\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=monitoring.regex.full_match(\"${join("|", [for lane in local.lanes : lane.id])}\")"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "${var.alerts.at_max_for_s}s"
      aggregations {
        # Percent change over the window: positive while the backlog is growing (valid for GAUGE metrics).
        alignment_period   = "${var.alerts.at_max_for_s}s"
        per_series_aligner = "ALIGN_PERCENT_CHANGE"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The ${each.key} worker group cannot grow any further and jobs are arriving faster than it answers them. Raise `autoscaler_max_replicas` (and the GPU quota), enable `on_demand_fallback`, or check the dashboard's latency and Triton charts for slow workers."
  }
}
