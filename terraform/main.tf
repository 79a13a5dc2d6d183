# inference-fleet: Pub/Sub job lanes, GCS buckets, a spot GPU worker group that scales on backlog down
# to zero, monitoring. Resource names come from fleet.json, shared with the local stack and the tests.

locals {
  fleet  = jsondecode(file("${path.module}/fleet.json"))
  prefix = local.fleet.name_prefix

  topics = { for key, short in local.fleet.topics : key => "${local.prefix}-${short}" }
  lanes  = { for lane in local.fleet.lanes : lane.name => merge(lane, { id = "${local.prefix}-${lane.subscription}" }) }

  dead_letter_subscription         = "${local.prefix}-${local.fleet.dead_letter_subscription}"
  dead_letter_handler_subscription = "${local.prefix}-${local.fleet.dead_letter_handler_subscription}"
  buckets                          = { for key, short in local.fleet.buckets : key => "${var.project_id}-${local.prefix}-${short}" }

  image_project = coalesce(var.image_project, var.project_id)
  subnetwork    = var.network.create ? google_compute_subnetwork.workers[0].self_link : var.network.subnetwork
  labels        = merge({ app = "inference-fleet", managed-by = "terraform" }, var.labels)

  # Worker configuration: the FLEET_* contract of worker/runtime/settings.py, rendered into instance metadata
  # (`fleet-env`, one KEY=value per line) and turned into an env file at boot by fleet-metadata-env.
  worker_optional_env = {
    FLEET_PIPELINE_SLOTS        = var.worker.pipeline_slots
    FLEET_WORKER_PROCESSES      = var.worker.worker_processes
    FLEET_MAX_BATCH_SIZE        = var.worker.max_batch_size
    FLEET_MAX_BATCH_DELAY_MS    = var.worker.max_batch_delay_ms
    FLEET_PREPROCESS_PROCESSES  = var.worker.preprocess_processes != null ? var.worker.preprocess_processes : lookup(var.preprocess_processes_by_machine_type, var.machine_type, null)
    FLEET_MAX_PROCESSING_S      = var.worker.max_processing_s
    FLEET_DRAIN_BUDGET_S        = var.worker.drain_budget_s
    FLEET_TRITON_OUTAGE_EXIT_S  = var.worker.triton_outage_exit_s
    FLEET_LOG_LEVEL             = var.worker.log_level
    FLEET_ALLOWED_INPUT_BUCKETS = length(var.worker.allowed_input_buckets) > 0 ? join(",", var.worker.allowed_input_buckets) : null
  }
  worker_env = merge(
    {
      GOOGLE_CLOUD_PROJECT                   = var.project_id
      FLEET_JOBS_TOPIC                       = local.topics.jobs
      FLEET_RESULTS_TOPIC                    = local.topics.results
      FLEET_DEAD_LETTER_TOPIC                = local.topics.dead_letter
      FLEET_DEAD_LETTER_SUBSCRIPTION         = local.dead_letter_subscription
      FLEET_DEAD_LETTER_HANDLER_SUBSCRIPTION = local.dead_letter_handler_subscription
      FLEET_INPUT_BUCKET                     = local.buckets.inputs
      FLEET_RESULTS_BUCKET                   = local.buckets.results
      # Per-process job counters and the failure alert's source (worker/runtime/telemetry.py).
      FLEET_METRICS_EXPORT = "true"
      # Triton runs beside the worker on the same VM (triton.service, host network).
      TRITON_GRPC_URL = "127.0.0.1:8001"
      TRITON_HTTP_URL = "http://127.0.0.1:8000"
    },
    { for name, lane in local.lanes : "FLEET_${upper(name)}_SUBSCRIPTION" => lane.id },
    { for k, v in local.worker_optional_env : k => tostring(v) if v != null },
    var.worker.extra_env,
  )

  # Per template: FLEET_INSTANCE_GROUP labels the worker's per-group metrics with its own group.
  instance_metadata = { for key, p in local.provisioning : key => {
    fleet-container-image  = var.container_image
    fleet-env              = join("\n", [for k, v in merge(local.worker_env, { FLEET_INSTANCE_GROUP = "${p.base_name}-mig" }) : "${k}=${v}"])
    fleet-engine-cache     = "gs://${local.buckets.engines}/engines"
    fleet-dlq-handler      = var.worker.dead_letter_handler_vm ? "true" : "false"
    enable-oslogin         = "TRUE"
    block-project-ssh-keys = "TRUE"
    serial-port-enable     = "FALSE"
  } }

  # Every API a resource or data source of the module calls. Service Usage (which enables them) must be
  # on already: it is on in new projects, and docs/deploy.md enables it with Cloud Resource Manager first.
  apis = toset([
    "artifactregistry.googleapis.com",
    "cloudresourcemanager.googleapis.com", # data.google_project, project IAM members, custom roles
    "compute.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "storage.googleapis.com",
  ])
}

# Data sources read at plan time unless they depend on something not yet applied: the depends_on defers
# them to apply time on a fresh project, after google_project_service has enabled the APIs they call
# (cloudresourcemanager here, storage and compute for the other two).
data "google_project" "this" {
  project_id = var.project_id

  depends_on = [google_project_service.apis]
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? local.apis : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}
