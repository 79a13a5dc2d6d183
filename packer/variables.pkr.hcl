variable "project_id" {
  type        = string
  description = "Project that builds and owns the image (the Terraform module's image_project)."
}

variable "zone" {
  type        = string
  description = "Zone of the temporary build VM."
  default     = "asia-northeast1-a"
}

variable "build_machine_type" {
  type        = string
  description = "Build VM machine type. The build needs no GPU: the driver ships in the base image, engines are built at first boot."
  default     = "n2-standard-4"
}

variable "subnetwork" {
  type        = string
  description = "Subnetwork of the build VM (needs Cloud NAT or an external IP to reach nvcr.io and the apt repositories); empty uses the default network."
  default     = ""
}

variable "source_image_family" {
  type        = string
  description = "Base image family: Canonical's Ubuntu accelerator image with the NVIDIA driver preinstalled and signed for Secure Boot."
  default     = "ubuntu-accelerator-2204-amd64-with-nvidia-550"
}

variable "source_image_project" {
  type        = string
  description = "Project of the base image family."
  default     = "ubuntu-os-accelerator-images"
}

variable "image_family" {
  type        = string
  description = "Family of the produced image; the Terraform module's image_family."
  default     = "fleet-worker"
}

variable "image_version" {
  type        = string
  description = "Suffix of the image name (e.g. a date or git sha); images are immutable, so every build needs a new one."
  default     = "dev"
}

variable "docker_version" {
  type        = string
  description = "docker-ce apt version prefix pinned on the image."
  default     = "5:27.3"
}

variable "nvidia_container_toolkit_version" {
  type        = string
  description = "nvidia-container-toolkit apt version pinned on the image."
  default     = "1.17.3-1"
}

variable "triton_image" {
  type        = string
  description = "Triton server image pulled at build time (registry and release as one reference)."
  default     = "nvcr.io/nvidia/tritonserver:24.08-py3"
}

variable "tensorrt_image" {
  type        = string
  description = "TensorRT image of the same NGC release as triton_image (same TensorRT version), for trtexec at first boot."
  default     = "nvcr.io/nvidia/tensorrt:24.08-py3"
}

variable "worker_image" {
  type        = string
  description = "Worker image pre-pulled at build time so the first boot does not wait for it; empty skips. The VM runs whatever the instance metadata names (pulled at boot if it differs)."
  default     = ""
}
