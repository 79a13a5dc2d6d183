# Inputs of the inference-fleet module. Every default lives here; main.tf never invents one.
# The fleet simulator reads the autoscaler_* defaults with python-hcl2: keep them plain literals.

variable "project_id" {
  description = "Project that hosts the fleet (topics, buckets, VMs)."
  type        = string
}

variable "region" {
  description = "Region of the instance groups, subnetwork, NAT and buckets."
  type        = string
}

variable "container_image" {
  description = "The worker container image (the one line a user sets), e.g. `asia-northeast1-docker.pkg.dev/my-project/fleet/worker:1.4.0`. Its entrypoint is the `fleet` command."
  type        = string

  validation {
    condition     = length(trimspace(var.container_image)) > 0 && !can(regex("\\s", var.container_image))
    error_message = "container_image must be a non-empty image reference without whitespace."
  }
}

variable "zones" {
  description = "Zones of the region that offer the GPU. Empty lets the regional MIG choose zones in the region, which fails for zones without the accelerator, so set this for GPU types that are not everywhere."
  type        = list(string)
  default     = []
}

variable "machine_type" {
  description = "Machine type of the workers. The default is an accelerator-optimized type that carries one NVIDIA L4, so `gpu` stays null: the cheapest per job of the capacity projection (docs/performance.md \"Capacity projection\", worker/dev/capacity.py) while `fleet worker` runs one process per VM, whose main loop then bounds a VM at ~200 jobs/s."
  type        = string
  default     = "g2-standard-8"
}

variable "preprocess_processes_by_machine_type" {
  description = "FLEET_PREPROCESS_PROCESSES per machine type when `worker.preprocess_processes` is null: the decode processes that keep the projected rate fed (worker/dev/capacity.py; tests/dev/test_capacity.py keeps this map equal to the projection). A machine type not listed leaves the worker's own default."
  type        = map(number)
  default = {
    "g2-standard-4"  = 3
    "g2-standard-8"  = 3
    "g2-standard-12" = 3
    "a2-highgpu-1g"  = 3
  }
}

variable "gpu" {
  description = "GPU attached with `guest_accelerator` for general-purpose machine types (e.g. `{ type = \"nvidia-tesla-t4\", count = 1 }` with `n1-standard-8`). Null for accelerator-optimized machine types (g2, a2, a3), which carry their GPUs."
  type = object({
    type  = string
    count = optional(number, 1)
  })
  default = null
}

variable "image_family" {
  description = "Image family built by packer/ (`fleet-worker`). The module resolves it to one image at plan time, so a new image changes the template and rolls out."
  type        = string
  default     = "fleet-worker"
}

variable "image_project" {
  description = "Project that holds the image family; null means project_id."
  type        = string
  default     = null
}

variable "boot_disk" {
  description = "Boot disk of each worker (size in GB and disk type)."
  type = object({
    size_gb = optional(number, 100)
    type    = optional(string, "pd-balanced")
  })
  default = {}
}

variable "worker" {
  description = "Worker settings passed as FLEET_* environment variables through instance metadata. `allowed_input_buckets` (bucket names besides the inputs bucket that jobs may name) also gives the worker objectViewer on each. Null leaves the worker's own default (worker/runtime/settings.py), except `preprocess_processes`, which then follows `preprocess_processes_by_machine_type`. `worker_processes` (null: 1) runs that many worker processes on each VM, which split `pipeline_slots` and `preprocess_processes` between them (docs/architecture.md, Several worker processes per VM). `drain_budget_s` must stay below the image's `docker stop -t` (25 s), itself below the 30 s spot notice."
  type = object({
    pipeline_slots         = optional(number)
    worker_processes       = optional(number)
    max_batch_size         = optional(number)
    max_batch_delay_ms     = optional(number)
    preprocess_processes   = optional(number)
    max_processing_s       = optional(number)
    drain_budget_s         = optional(number, 20)
    triton_outage_exit_s   = optional(number)
    log_level              = optional(string, "INFO")
    allowed_input_buckets  = optional(list(string), [])
    extra_env              = optional(map(string), {})
    dead_letter_handler_vm = optional(bool, true)
  })
  default = {}

  validation {
    condition     = var.worker.drain_budget_s == null || (var.worker.drain_budget_s > 0 && var.worker.drain_budget_s <= 22)
    error_message = "worker.drain_budget_s must be in (0, 22]: the image stops the container with `docker stop -t 25` and spot VMs get 30 s."
  }

  validation {
    condition     = var.worker.worker_processes == null || (var.worker.worker_processes >= 1 && var.worker.worker_processes <= coalesce(var.worker.pipeline_slots, 32))
    error_message = "worker.worker_processes must be at least 1 and at most pipeline_slots (32 by default): the processes split the VM's slots."
  }

  validation {
    condition     = alltrue([for k in keys(var.worker.extra_env) : can(regex("^FLEET_[A-Z0-9_]+$", k))])
    error_message = "worker.extra_env keys must be FLEET_* names."
  }
}

variable "autohealing_initial_delay_s" {
  type        = number
  description = "Seconds the MIG waits after a VM starts before its health check can recreate it: covers the boot's image pull and, on an engine cache miss, building and measuring each precision (packer/README.md boot timeline)."
  default     = 1200

  validation {
    condition     = var.autohealing_initial_delay_s >= 300 && var.autohealing_initial_delay_s <= 3600
    error_message = "The autohealing_initial_delay_s must be between 300 (a cache-hit boot) and 3600 (the API's maximum)."
  }
}

variable "autoscaler_max_replicas" {
  description = "Upper bound of the spot worker group."
  type        = number
  default     = 10
}

variable "autoscaler_cooldown_period_s" {
  description = "Autoscaler initialisation period in seconds: how long a new VM is given (boot, Triton load) before its effect on the backlog is counted."
  type        = number
  default     = 120
}

variable "autoscaler_backlog_per_vm" {
  description = "Per-lane `single_instance_assignment`: unacked messages one VM is expected to absorb (each lane on its own count metric, autoscaler.tf). The group size is the largest of ceil(backlog / assignment) over the lanes. batch: the messages one VM clears while a new VM comes up (projected jobs/s of `machine_type` x 175 s cold boot of the baked image, docs/deploy.md; two significant figures: worker/dev/capacity.py `backlog_per_vm`, docs/capacity.md; tests/dev/test_capacity.py keeps it equal), so a burst adds VMs only for work the running ones could not finish before a new one serves. interactive: small, so any interactive backlog brings a VM at once. Set batch again from the projection when `machine_type` or the worker's processes change."
  type        = map(number)
  default = {
    interactive = 10
    batch       = 35000
  }
}

variable "autoscaler_scale_in_max_replicas" {
  description = "`scale_in_control`: at most this many VMs removed within one time window."
  type        = number
  default     = 2
}

variable "autoscaler_scale_in_time_window_s" {
  description = "`scale_in_control` time window in seconds."
  type        = number
  default     = 600
}

variable "scaling_schedules" {
  description = "Scheduled minimum group sizes (e.g. weekday daytime); outside them the group can reach zero."
  type = map(object({
    min_required_replicas = number
    schedule              = string
    duration_s            = number
    time_zone             = string
  }))
  default = {
    weekday-daytime = {
      min_required_replicas = 1
      schedule              = "0 9 * * MON-FRI"
      duration_s            = 36000
      time_zone             = "Asia/Tokyo"
    }
  }

  validation {
    condition     = alltrue([for s in values(var.scaling_schedules) : s.duration_s >= 300])
    error_message = "scaling_schedules duration_s must be at least 300 (the autoscaler's minimum)."
  }
}

variable "on_demand_fallback" {
  description = "A second, on-demand group for spot stock-outs. Each lane signals on its own oldest-unacked-age metric with `single_instance_assignment` = stall_age_s: the autoscaler asks for ceil(age / stall_age_s) VMs, so the first on-demand VM starts as soon as a lane holds an unacked job (not after stall_age_s) and one more per stall_age_s of age, up to max_replicas. It therefore runs beside the spot group whenever there is a backlog: enable it only where missing spot capacity costs more than on-demand hours (docs/deploy.md)."
  type = object({
    enabled      = optional(bool, false)
    max_replicas = optional(number, 2)
    stall_age_s  = optional(map(number), { interactive = 300, batch = 3600 })
  })
  default = {}
}

variable "update_policy_type" {
  description = "MIG update policy: PROACTIVE replaces running VMs with the new template (they drain first); OPPORTUNISTIC applies it only to VMs created later."
  type        = string
  default     = "PROACTIVE"

  validation {
    condition     = contains(["PROACTIVE", "OPPORTUNISTIC"], var.update_policy_type)
    error_message = "update_policy_type must be PROACTIVE or OPPORTUNISTIC."
  }
}

variable "rollout_timeout_min" {
  description = "Minutes `terraform apply` waits for a group to run the new template on every VM (wait_for_instances_status = UPDATED) before it fails; the old template is deleted only after that. A rollout replaces max_surge VMs at a time, each taking a boot (docs/deploy.md boot estimate; 5-15 min more when the engine cache misses), so allow ceil(max_replicas / max_surge) boots."
  type        = number
  default     = 60

  validation {
    condition     = var.rollout_timeout_min >= 15
    error_message = "rollout_timeout_min must be at least 15 (one cold boot with an engine build)."
  }
}

variable "network" {
  description = "Network of the workers. With `create = true` the module makes a VPC and subnetwork with Private Google Access and Cloud NAT (`enable_nat`); otherwise it uses `subnetwork` (self link), which must have Private Google Access (checked at plan), and `external_egress = true` states that it has Cloud NAT, needed only when `container_image` is outside Artifact Registry and gcr.io (checked at plan)."
  type = object({
    create        = optional(bool, true)
    subnetwork    = optional(string)
    subnet_cidr   = optional(string, "10.64.0.0/24")
    enable_nat      = optional(bool, true)
    allow_iap_ssh   = optional(bool, true)
    external_egress = optional(bool, false)
  })
  default = {}

  validation {
    condition     = var.network.create || var.network.subnetwork != null
    error_message = "network.subnetwork is required when network.create is false."
  }
}

variable "kms_key_name" {
  description = "Cloud KMS key (projects/…/cryptoKeys/…) for CMEK on the buckets and topics; null uses Google-managed keys."
  type        = string
  default     = null
}

variable "bucket_retention_days" {
  description = "Lifecycle: objects are deleted this many days after creation (inputs, results, engines)."
  type = object({
    inputs  = optional(number, 30)
    results = optional(number, 90)
    engines = optional(number, 365)
  })
  default = {}
}

variable "force_destroy_buckets" {
  description = "Let `terraform destroy` delete non-empty buckets (for test projects only)."
  type        = bool
  default     = false
}

variable "artifact_registry_repositories" {
  description = "Existing Artifact Registry repositories the workers pull from; the worker service account gets reader on each (and nothing project-wide). The repository `artifact_registry` creates is added to these."
  type = list(object({
    location   = string
    repository = string
    project    = optional(string)
  }))
  default = []
}

variable "artifact_registry" {
  description = "With `create = true` the module makes a Docker repository `repository_id` in `location` (null: the region) for the worker image, with immutable tags, and gives the worker service account reader on it. Push the image there before the first VM starts (docs/deploy.md)."
  type = object({
    create         = optional(bool, false)
    repository_id  = optional(string, "fleet")
    location       = optional(string)
    immutable_tags = optional(bool, true)
  })
  default = {}
}

variable "client_principals" {
  description = "IAM members (`serviceAccount:…`, `group:…`, `user:…`) that submit jobs and read results with the client (worker/client). Each gets publisher on the jobs topic, objectCreator and objectViewer on the inputs bucket (the client checks whether an input is already there), objectViewer on the results bucket, subscriber on the results topic (attach a subscription) and a project custom role to create, read, pull from and delete subscriptions (its own filtered results subscription; Pub/Sub IAM has no per-name conditions, see docs/deploy.md)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.client_principals : can(regex("^(serviceAccount|group|user|domain|principal|principalSet):.+", m))])
    error_message = "client_principals must be IAM members such as serviceAccount:NAME@PROJECT.iam.gserviceaccount.com or group:team@example.com."
  }
}

variable "alerts" {
  description = "Alert thresholds and where alerts go. `oldest_unacked_age_s` is per lane; `failures_per_5min` counts failed jobs from the worker's metric; `restarts_per_10min` is the systemd restarts of one VM's worker unit that count as a crash loop; `at_max_for_s` is how long a group must sit at its max size while a lane's backlog grows."
  type = object({
    notification_channels = optional(list(string), [])
    oldest_unacked_age_s  = optional(map(number), { interactive = 300, batch = 3600 })
    failures_per_5min     = optional(number, 10)
    restarts_per_10min    = optional(number, 3)
    at_max_for_s          = optional(number, 900)
  })
  default = {}
}

variable "created_metric_wait_s" {
  description = "Seconds the apply that creates the log-based metric and the metric descriptor waits before creating the alert policies on them: Monitoring answers 404 for up to 10 minutes after a metric is created (hashicorp/terraform-provider-google#11102). Only that apply waits."
  type        = number
  default     = 600

  validation {
    condition     = var.created_metric_wait_s >= 0 && var.created_metric_wait_s <= 900
    error_message = "created_metric_wait_s must be between 0 and 900 (the documented delay is up to 600)."
  }
}

variable "enable_apis" {
  description = "Enable the Google APIs the fleet uses (never disabled on destroy)."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels added to every labelled resource."
  type        = map(string)
  default     = {}
}
