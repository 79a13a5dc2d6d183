"""The local stack: Pub/Sub emulator, GCS emulator with preconditions, tritonserver on CPU, and ``up/down``.

See docs/local-stack.md. Nothing here is imported by the production worker.
"""
