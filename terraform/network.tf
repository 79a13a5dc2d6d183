# Workers have no external IP. Private Google Access reaches Pub/Sub, GCS, Artifact Registry and the
# monitoring APIs; Cloud NAT covers registries outside Google (e.g. nvcr.io when the baked Triton image
# is overridden). Ingress: nothing but IAP-tunnelled SSH for operators (OS Login decides who).

resource "google_compute_network" "fleet" {
  count = var.network.create ? 1 : 0

  project                 = var.project_id
  name                    = "${local.prefix}-vpc"
  auto_create_subnetworks = false
  routing_mode            = "REGIONAL"

  depends_on = [google_project_service.apis]
}

resource "google_compute_subnetwork" "workers" {
  count = var.network.create ? 1 : 0

  project                  = var.project_id
  name                     = "${local.prefix}-workers"
  region                   = var.region
  network                  = google_compute_network.fleet[0].id
  ip_cidr_range            = var.network.subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_router" "nat" {
  count = var.network.create && var.network.enable_nat ? 1 : 0

  project = var.project_id
  name    = "${local.prefix}-router"
  region  = var.region
  network = google_compute_network.fleet[0].id
}

resource "google_compute_router_nat" "nat" {
  count = var.network.create && var.network.enable_nat ? 1 : 0

  project                            = var.project_id
  name                               = "${local.prefix}-nat"
  region                             = var.region
  router                             = google_compute_router.nat[0].name
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.workers[0].id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

resource "google_compute_firewall" "iap_ssh" {
  count = var.network.create && var.network.allow_iap_ssh ? 1 : 0

  project     = var.project_id
  name        = "${local.prefix}-allow-iap-ssh"
  network     = google_compute_network.fleet[0].id
  description = "SSH to workers only through Identity-Aware Proxy TCP forwarding (no external IPs)."
  direction   = "INGRESS"
  priority    = 1000
  # IAP's TCP forwarding range, documented by Google; not the internet.
  source_ranges = ["35.235.240.0/20"]
  target_tags   = ["${local.prefix}-worker"]

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Google's health-check probers (documented ranges) reach fleet-health for the MIG's autohealing. On a
# network the module does not create, the same rule is the network owner's to add.
resource "google_compute_firewall" "health_checks" {
  count = var.network.create ? 1 : 0

  project       = var.project_id
  name          = "${local.prefix}-allow-health-checks"
  network       = google_compute_network.fleet[0].id
  description   = "Autohealing health checks to fleet-health on the workers."
  direction     = "INGRESS"
  priority      = 1000
  source_ranges = ["35.191.0.0/16", "130.211.0.0/22"]
  target_tags   = ["${local.prefix}-worker"]

  allow {
    protocol = "tcp"
    ports    = [tostring(local.health_port)]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# Explicit low-priority deny so the intent (no other ingress) survives someone adding a broad allow
# rule to a shared network; VPCs deny ingress implicitly, but that rule is invisible.
resource "google_compute_firewall" "deny_ingress" {
  count = var.network.create ? 1 : 0

  project       = var.project_id
  name          = "${local.prefix}-deny-ingress"
  network       = google_compute_network.fleet[0].id
  direction     = "INGRESS"
  priority      = 65534
  source_ranges = ["0.0.0.0/0"]
  target_tags   = ["${local.prefix}-worker"]

  deny {
    protocol = "all"
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}
