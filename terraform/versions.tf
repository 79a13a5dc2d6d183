terraform {
  # optional() object attributes with defaults need Terraform 1.3.
  required_version = ">= 1.3, < 2.0"

  required_providers {
    # 6.x: google_compute_region_instance_template, and the autoscaler metric `filter` and
    # `single_instance_assignment` in the GA provider (they were google-beta only before).
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
    # time_sleep: the wait before alert policies on metrics created in the same apply (monitoring.tf).
    time = {
      source  = "hashicorp/time"
      version = ">= 0.9, < 1.0"
    }
  }

  provider_meta "google" {
    module_name = "inference-fleet/terraform/v0.1.0"
  }
}
