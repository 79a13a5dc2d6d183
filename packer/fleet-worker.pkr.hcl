# The fleet worker image: NVIDIA driver (from the base image), Docker + NVIDIA container toolkit, the
# Triton / TensorRT / worker images pre-pulled, the Ops Agent, and the systemd units that run them.
#   packer init packer/ && packer build -var project_id=my-project packer/

locals {
  image_name = "${var.image_family}-${var.image_version}"
  scripts    = "${path.root}/scripts"
  # Defaults relative to the template, so `packer build packer/` works from the repository root.
  model_repository_dir = var.model_repository_dir != "" ? var.model_repository_dir : "${path.root}/../model_repository/gpu"
  onnx_model_path      = var.onnx_model_path != "" ? var.onnx_model_path : "${path.root}/../model_repository/cpu/drawing_analyzer/1/model.onnx"
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
  image_description = "inference-fleet worker: Triton + worker containers, NVIDIA driver and container toolkit."
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

  provisioner "file" {
    source      = local.model_repository_dir
    destination = "/tmp/fleet/model_repository"
  }

  provisioner "file" {
    source      = local.onnx_model_path
    destination = "/tmp/fleet/model.onnx"
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
      "MODEL_INPUT_NAME=${var.model_input.name}",
      "MODEL_INPUT_CHW=${var.model_input.chw}",
      "MODEL_MAX_BATCH=${var.model_input.max_batch}",
      "MODEL_OPT_BATCH=${var.model_input.opt_batch}",
      "TRT_PRECISION=${var.trt_precision}",
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
