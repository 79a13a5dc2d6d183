# Buckets: inputs (clients upload drawings), results (one write-once object per job), engines (TensorRT
# engine cache keyed by compute capability and TensorRT version).

locals {
  storage_service_agent = "serviceAccount:${data.google_storage_project_service_account.this.email_address}"
}

data "google_storage_project_service_account" "this" {
  project = var.project_id

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "buckets" {
  for_each = local.buckets

  # checkov:skip=CKV_GCP_62: access logs go to Cloud Audit Logs (Data Access); legacy usage-log buckets add cost without value here.
  # checkov:skip=CKV_GCP_78: objects are written once with ifGenerationMatch=0 and never overwritten; versioning would only keep deleted inputs past their lifecycle.
  project       = var.project_id
  name          = each.value
  location      = var.region
  storage_class = "STANDARD"
  force_destroy = var.force_destroy_buckets
  labels        = merge(local.labels, { purpose = each.key })

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  lifecycle_rule {
    condition {
      age = var.bucket_retention_days[each.key]
    }
    action {
      type = "Delete"
    }
  }

  # Uploads that never completed still cost; clean them up after a day.
  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  depends_on = [google_project_service.apis, google_kms_crypto_key_iam_member.storage_agent]
}

# CMEK: the service agents encrypt on the module's behalf.
resource "google_kms_crypto_key_iam_member" "storage_agent" {
  count = var.kms_key_name == null ? 0 : 1

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.storage_service_agent
}

resource "google_kms_crypto_key_iam_member" "pubsub_agent" {
  count = var.kms_key_name == null ? 0 : 1

  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.pubsub_service_agent
}
