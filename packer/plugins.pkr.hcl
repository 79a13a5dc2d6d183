# Kept apart from the template: Debian's packer 1.6.6 (used by scripts/lint-infra to validate offline)
# rejects `required_plugins`; a current packer (>= 1.7) reads this file and installs the plugin with
# `packer init packer/`.
packer {
  required_version = ">= 1.10.0"
  required_plugins {
    googlecompute = {
      source  = "github.com/hashicorp/googlecompute"
      version = ">= 1.1.4, < 2.0.0"
    }
  }
}
