# Scale on work waiting, per group, so the group can reach zero.
#
# An autoscaler takes each Cloud Monitoring metric once ("one signal per metric type", at most 5 metric
# signals: cloud.google.com/compute/docs/autoscaler/multiple-signals), so every signal of one autoscaler
# names a different Pub/Sub metric; the filter picks the subscription (resource pubsub_subscription, a
# per-group metric) and the autoscaler sums the time series the filter returns (the by-region metrics
# have one per region).
#
# Spot group: a message-count signal per lane with `single_instance_assignment` = messages one VM
# absorbs. Each recommends ceil(count / assignment) VMs and the autoscaler takes the largest, so
# N = max over lanes of ceil(backlog / assignment): zero when every lane is empty, and one step to N when a
# burst lands. Two count metrics exist, num_undelivered_messages and num_unacked_messages_by_region (the
# same count, split by region), one per lane. The dead-letter handler signals on the oldest unacked
# message's age with an assignment of the subscription's whole retention: one VM for any dead letter. No
# CPU or per-instance (gce_instance) policy: an autoscaler with one needs a VM to measure and never goes
# below one.
#
# On-demand fallback: each lane on its own oldest-unacked-age metric, one VM per stall_age_s of age. The
# autoscaler rounds up, so its first VM starts as soon as a lane has an unacked job, not after
# stall_age_s (variables.tf, docs/deploy.md).

locals {
  backlog_metric = "pubsub.googleapis.com/subscription/num_undelivered_messages"
  age_metric     = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"

  # Per lane of fleet.json: the count metric of the spot group and the age metric of the fallback.
  lane_backlog_metric = {
    interactive = "pubsub.googleapis.com/subscription/num_unacked_messages_by_region"
    batch       = "pubsub.googleapis.com/subscription/num_undelivered_messages"
  }
  lane_stall_metric = {
    interactive = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
    batch       = "pubsub.googleapis.com/subscription/oldest_unacked_message_age_by_region"
  }
  dead_letter_handler_metric = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
  # Pub/Sub drops a message after the subscription's retention, so its age never exceeds it.
  dead_letter_handler_max_age_s = 604800

  spot_policies = merge(
    {
      for name, lane in local.lanes : name => {
        metric     = local.lane_backlog_metric[name]
        filter     = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${lane.id}\""
        assignment = var.autoscaler_backlog_per_vm[name]
      }
    },
    var.worker.dead_letter_handler_vm ? {
      dead-letter-handler = {
        metric     = local.dead_letter_handler_metric
        filter     = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${local.dead_letter_handler_subscription}\""
        assignment = local.dead_letter_handler_max_age_s
      }
    } : {},
  )

  fallback_policies = {
    for name, lane in local.lanes : name => {
      metric     = local.lane_stall_metric[name]
      filter     = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${lane.id}\""
      assignment = var.on_demand_fallback.stall_age_s[name]
    }
  }

  autoscaled = {
    for key, p in local.provisioning : key => {
      max_replicas = p.max_replicas
      policies     = key == "spot" ? local.spot_policies : local.fallback_policies
      schedules    = key == "spot" ? var.scaling_schedules : {}
    }
  }
}

resource "google_compute_region_autoscaler" "workers" {
  for_each = local.autoscaled

  project = var.project_id
  region  = var.region
  name    = "${google_compute_region_instance_group_manager.workers[each.key].name}-autoscaler"
  target  = google_compute_region_instance_group_manager.workers[each.key].id

  autoscaling_policy {
    min_replicas    = 0
    max_replicas    = each.value.max_replicas
    cooldown_period = var.autoscaler_cooldown_period_s
    mode            = "ON"

    dynamic "metric" {
      for_each = each.value.policies
      content {
        name                       = metric.value.metric
        filter                     = metric.value.filter
        single_instance_assignment = metric.value.assignment
      }
    }

    dynamic "scaling_schedules" {
      for_each = each.value.schedules
      content {
        name                  = scaling_schedules.key
        min_required_replicas = scaling_schedules.value.min_required_replicas
        schedule              = scaling_schedules.value.schedule
        duration_sec          = scaling_schedules.value.duration_s
        time_zone             = scaling_schedules.value.time_zone
        description           = "Minimum warm workers during ${scaling_schedules.key}."
      }
    }

    # Scale in slowly: a removed VM drains (finishes in-flight jobs within the drain budget, the rest
    # are redelivered), but a burst that arrives right after a scale-in should find warm VMs.
    scale_in_control {
      time_window_sec = var.autoscaler_scale_in_time_window_s
      max_scaled_in_replicas {
        fixed = var.autoscaler_scale_in_max_replicas
      }
    }
  }

  lifecycle {
    precondition {
      condition     = length(each.value.policies) <= 5
      error_message = "An autoscaler takes at most 5 metric policies (one per lane, plus the dead-letter handler)."
    }
    precondition {
      condition     = length(distinct([for p in values(each.value.policies) : p.metric])) == length(each.value.policies)
      error_message = "An autoscaler takes each Cloud Monitoring metric once: give every lane of fleet.json its own metric in lane_backlog_metric / lane_stall_metric."
    }
    precondition {
      condition     = alltrue([for name in keys(local.lanes) : contains(keys(var.autoscaler_backlog_per_vm), name)])
      error_message = "autoscaler_backlog_per_vm needs an entry for every lane in fleet.json."
    }
  }
}
