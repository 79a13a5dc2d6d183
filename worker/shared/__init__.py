"""Shared contracts: what every side of the fleet agrees on, and nothing else.

Runs everywhere: in a client, on a GPU VM, on a laptop. Job/result/notification records and their JSON
Schemas (``contracts``), the error hierarchy with its stable codes (``errors``), resource names
(``resources`` with ``fleet.json``, the copy of ``terraform/fleet.json``), exit codes (``exit_codes``) and
small statistics helpers (``stats``). Standard library only; imports nothing else from ``worker``.
"""
