# Optional: the Docker repository the worker image is pushed to (`artifact_registry.create`). Without it,
# list existing repositories in `artifact_registry_repositories`; either way the worker service account
# gets reader on exactly those repositories.

locals {
  registry_location = coalesce(var.artifact_registry.location, var.region)
}

resource "google_artifact_registry_repository" "worker" {
  count = var.artifact_registry.create ? 1 : 0

  # checkov:skip=CKV_GCP_84: CMEK follows kms_key_name like the buckets and topics; without it, Google-managed keys.
  kms_key_name = var.kms_key_name

  project       = var.project_id
  location      = local.registry_location
  repository_id = var.artifact_registry.repository_id
  format        = "DOCKER"
  description   = "inference-fleet worker images (container_image)."
  labels        = local.labels

  # A tag names one image for ever: a VM that boots later pulls what the template was planned with.
  docker_config {
    immutable_tags = var.artifact_registry.immutable_tags
  }

  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.registry_agent]
}

# CMEK: Artifact Registry's service agent encrypts the image layers on the module's behalf.
resource "google_kms_crypto_key_iam_member" "registry_agent" {
  count = var.artifact_registry.create && var.kms_key_name != null ? 1 : 0

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-artifactregistry.iam.gserviceaccount.com"
}
