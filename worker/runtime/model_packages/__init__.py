"""Model packages: a team's model file, its ``preprocess``/``postprocess`` and a declaration, served as is.

``declaration`` reads ``model.toml`` (``tensors``: shapes, bounds, buckets; ``answers``: answer-level
parity rules); ``loader`` imports a directory of packages into a ``Catalog`` and refuses a bad one with the
package named; ``catalog`` maps analyses to models and orders ``needs``; ``items`` holds what a handler
returns (``Prepared``) and the pure item rules (checks, buckets, padding, batch signature); ``chain`` runs
a job's analyses outside the worker as the worker feeds them (``fleet models check``, the gate);
``parity`` decides an engine's precision from measured disagreement; ``triton_repository`` writes the
Triton model repository (CPU python-backend or GPU TensorRT variant) from the packages. docs/models.md is the
user's guide. Nothing here imports Pub/Sub, GCS or Triton's client.
"""
