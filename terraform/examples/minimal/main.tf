# The whole deployment: where it runs, which zones have the GPU, and the one line that matters — the
# worker image, pushed to the Artifact Registry repository this example creates. docs/deploy.md walks
# through it from an empty project; terraform.tfvars.example holds the values to copy.
#   terraform init && terraform apply -var-file=terraform.tfvars

variable "project_id" {
  description = "Project to deploy the fleet into."
  type        = string
}

variable "region" {
  description = "Region of the workers, buckets and the image repository."
  type        = string
  default     = "asia-northeast1"
}

variable "zones" {
  description = "Zones of the region that offer the GPU of machine_type (g2-standard-8: NVIDIA L4). List them with `gcloud compute accelerator-types list --filter=\"name=nvidia-l4 AND zone~/zones/REGION-\"` (zone is a URL: docs/deploy.md step 2)."
  type        = list(string)

  validation {
    condition     = length(var.zones) > 0
    error_message = "List the zones that offer the GPU: an empty list lets the group try zones without it."
  }
}

variable "image_tag" {
  description = "Tag of the worker image in the repository (tags are immutable: a new build gets a new tag)."
  type        = string
  default     = "0.1.0"
}

variable "registry_repository" {
  description = "Artifact Registry repository the example creates for the worker image."
  type        = string
  default     = "fleet"
}

variable "client_principals" {
  description = "Who submits jobs and reads results (e.g. `user:you@example.com`)."
  type        = list(string)
  default     = []
}

provider "google" {
  project = var.project_id
  region  = var.region
}

module "fleet" {
  source = "../.."

  project_id        = var.project_id
  region            = var.region
  zones             = var.zones
  artifact_registry = { create = true, repository_id = var.registry_repository }
  container_image   = "${var.region}-docker.pkg.dev/${var.project_id}/${var.registry_repository}/worker:${var.image_tag}"
  client_principals = var.client_principals
}

output "jobs_topic" {
  description = "Publish jobs here."
  value       = module.fleet.jobs_topic
}

output "input_bucket" {
  description = "Upload inputs here."
  value       = module.fleet.input_bucket
}

output "results_bucket" {
  description = "Results land here as results/<job_id>.json."
  value       = module.fleet.results_bucket
}

output "image_repository" {
  description = "Push the worker image here (docker push <this>/worker:<image_tag>)."
  value       = module.fleet.artifact_registry_repository
}

output "client_env" {
  description = "The FLEET_* environment a client needs (`fleet submit`, FleetClient.from_env)."
  value       = module.fleet.client_env
}
