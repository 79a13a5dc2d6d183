# Scale on work waiting, per group, so the group can reach zero.
#
# Spot group: one metric policy per lane on pubsub.googleapis.com/subscription/num_undelivered_messages
# (a per-group metric: resource pubsub_subscription, selected with `filter`) with
# `single_instance_assignment` = messages one VM absorbs. The autoscaler takes the largest
# recommendation of all policies, so N = max over lanes of ceil(backlog / assignment): zero when every
# lane is empty, and one step to N when a burst lands. No CPU or per-instance (gce_instance) policy: an
# autoscaler with one needs a VM to measure and never goes below one.
#
# On-demand fallback: the same lanes, but on oldest_unacked_message_age with the assignment in seconds,
# so it adds a VM only while jobs sit unserved for stall_age_s (spot stock-out) and returns to zero when
# the spot group catches up.

locals {
  backlog_metric = "pubsub.googleapis.com/subscription/num_undelivered_messages"
  age_metric     = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"

  spot_policies = merge(
    {
      for name, lane in local.lanes : name => {
        metric     = local.backlog_metric
        filter     = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${lane.id}\""
        assignment = var.autoscaler_backlog_per_vm[name]
      }
    },
    var.worker.dead_letter_handler_vm ? {
      dead-letter-handler = {
        metric     = local.backlog_metric
        filter     = "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"${local.dead_letter_handler_subscription}\""
        assignment = var.autoscaler_dead_letter_backlog_per_vm
      }
    } : {},
  )

  fallback_policies = {
    for name, lane in local.lanes : name => {
      metric     = local.age_metric
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
      condition     = alltrue([for name in keys(local.lanes) : contains(keys(var.autoscaler_backlog_per_vm), name)])
      error_message = "autoscaler_backlog_per_vm needs an entry for every lane in fleet.json."
    }
  }
}
