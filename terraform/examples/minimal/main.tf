# The whole deployment: project, region, and the one line that matters — the worker image.
#   terraform init && terraform apply -var project_id=my-project

variable "project_id" {
  description = "Project to deploy the fleet into."
  type        = string
}

provider "google" {
  project = var.project_id
  region  = "asia-northeast1"
}

module "fleet" {
  source = "../.."

  project_id      = var.project_id
  region          = "asia-northeast1"
  container_image = "asia-northeast1-docker.pkg.dev/my-project/fleet/worker:0.1.0"
}

output "jobs_topic" {
  description = "Publish jobs here."
  value       = module.fleet.jobs_topic
}

output "results_bucket" {
  description = "Results land here as results/<job_id>.json."
  value       = module.fleet.results_bucket
}
