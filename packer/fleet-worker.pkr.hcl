# The generic fleet VM image: NVIDIA driver (from the base image), Docker + NVIDIA container toolkit, the
# Triton / TensorRT images pre-pulled, the Ops Agent, and the systemd units. No model: at boot the units
# take the model packages out of the worker image the metadata names (packer/README.md).
#   packer init packer/ && packer build -var project_id=my-project packer/

locals {
  image_name = "${var.image_family}-${var.image_version}"
  scripts    = "${path.root}/scripts"
}

source "googlecompute" "worker" {
  project_id              = var.project_id
  zone                    = var.zone
  machine_type            = var.build_machine_type
  subnetwork              = var.subnetwork
  source_image_family     = var.source_image_family
  source_image_project_id = [var.source_image_project]
  disk_size               = 100
  disk_type               = "pd-ssd"

  image_name        = local.image_name
  image_family      = var.image_family
  image_description = "inference-fleet generic worker VM: driver, Docker + NVIDIA toolkit, Triton and TensorRT images; models come from the worker image at boot."
  image_labels = {
    app           = "inference-fleet"
    image-version = var.image_version
  }

  ssh_username = "packer"
  # Same posture as the workers: Secure Boot needs the base image's signed driver modules.
  enable_secure_boot          = true
  enable_vtpm                 = true
  enable_integrity_monitoring = true
}

build {
  sources = ["source.googlecompute.worker"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/fleet"]
  }

  provisioner "file" {
    source      = "${path.root}/files/"
    destination = "/tmp/fleet/files"
  }

  # One concern per script, in order; each is idempotent (safe to re-run on a half-built VM).
  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo -E bash '{{ .Path }}'"
    environment_vars = [
      "DOCKER_VERSION=${var.docker_version}",
      "NVIDIA_CONTAINER_TOOLKIT_VERSION=${var.nvidia_container_toolkit_version}",
      "TRITON_IMAGE=${var.triton_image}",
      "TENSORRT_IMAGE=${var.tensorrt_image}",
      "WORKER_IMAGE=${var.worker_image}",
      "IMAGE_VERSION=${var.image_version}",
    ]
    scripts = [
      "${local.scripts}/10-base-packages.sh",
      "${local.scripts}/20-docker.sh",
      "${local.scripts}/30-nvidia-container-toolkit.sh",
      "${local.scripts}/40-ops-agent.sh",
      "${local.scripts}/50-pull-images.sh",
      "${local.scripts}/60-fleet-files.sh",
      "${local.scripts}/90-cleanup.sh",
    ]
  }
}
