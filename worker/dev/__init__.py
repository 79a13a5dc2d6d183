"""Development tooling: runs only on a laptop or CI machine, never on a VM or in a client.

The local stack (``devstack``: Pub/Sub and GCS emulators, tritonserver on CPU), the load/chaos harness
(``harness``) and what drives it (``bench``, ``chaos``, ``demo``: ``scripts/`` only call their ``main``), the
fleet simulator (``fleet_simulator``) and the drawing generator (``drawings``). Needs the ``dev`` extra.
May import everything in ``worker``; nothing outside ``worker.dev`` imports it.
"""
