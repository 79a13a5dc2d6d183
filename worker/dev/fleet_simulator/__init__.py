"""Fleet simulator: what an autoscaling policy does to cost and latency before it is deployed.

A discrete-event simulation (``engine``) of the worker fleet under the GCE autoscaler (``autoscaler``),
with the policy read from the Terraform module (``terraform``), arrival traces (``traces``), inputs with
documented defaults (``config``) and the published figures (``report``). ``scripts/simulate`` runs it.
"""
