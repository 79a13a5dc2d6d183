#!/usr/bin/env python3
"""Raw throughput of the served drawing_analyzer model at batch 1, 8 and 32 (infer/s), via tritonclient gRPC.

"Raw": preprocessed tensors are prepared up front, so only Triton + the model are measured (no decode, no
Pub/Sub, no GCS). ``infer/s`` counts images (a batch of 32 is 32 inferences). Each batch size runs for
``--seconds`` with ``--concurrency`` client threads each sending synchronous requests back to back.

    .venv/bin/python scripts/bench_triton_model.py                      # private tritonserver, CPU repo
    .venv/bin/python scripts/bench_triton_model.py --triton-url 127.0.0.1:8001 --batches 1 8 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.dev import drawings  # noqa: E402
from worker.models.drawing_analyzer import model_spec, preprocessing  # noqa: E402


def sample_inputs(count: int) -> np.ndarray:
    """``count`` real preprocessed drawings (seed base 5, half A4 size to prepare quickly)."""
    return np.stack(
        [
            preprocessing.preprocess_bytes(d)
            for d, _ in drawings.dataset(count, seed=5, size=(877, 620), fmt="mixed")
        ]
    )


def bench_batch(url: str, x: np.ndarray, batch: int, *, seconds: float, concurrency: int) -> dict[str, float]:
    inputs = x[:batch] if len(x) >= batch else np.resize(x, (batch, *x.shape[1:]))
    latencies: list[float] = []
    lock = threading.Lock()
    deadline: list[float] = []
    go = threading.Event()

    def worker() -> None:
        with grpcclient.InferenceServerClient(url) as client:
            tensor = grpcclient.InferInput(
                model_spec.INPUT.name, list(inputs.shape), model_spec.INPUT.triton_dtype
            )
            tensor.set_data_from_numpy(inputs)
            for _ in range(3):  # warm this connection and the model at this batch size
                client.infer(model_spec.MODEL_NAME, [tensor])
            barrier.wait()
            go.wait()
            mine = []
            while time.perf_counter() < deadline[0]:
                started = time.perf_counter()
                client.infer(model_spec.MODEL_NAME, [tensor])
                mine.append(time.perf_counter() - started)
            with lock:
                latencies.extend(mine)

    barrier = threading.Barrier(concurrency + 1)
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()  # every client is connected and warm
    begin = time.perf_counter()
    deadline.append(begin + seconds)
    go.set()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    elapsed = time.perf_counter() - begin
    requests = len(latencies)
    return {
        "batch": batch,
        "concurrency": concurrency,
        "requests": requests,
        "infer_per_s": round(requests * batch / elapsed, 1),
        "requests_per_s": round(requests / elapsed, 1),
        "latency_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2) if latencies else float("nan"),
        "latency_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2) if latencies else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triton-url", help="host:port of a running tritonserver (default: start one)")
    parser.add_argument(
        "--serve", choices=("cpu", "gpu"), default="cpu", help="repository for a private server"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the results JSON here too")
    args = parser.parse_args(argv)

    x = sample_inputs(max(args.batches))
    server = None
    url = args.triton_url
    if url is None:
        from worker.dev.devstack.tritonserver import TritonServer  # noqa: PLC0415 (needs .venv-triton)

        server = TritonServer(
            # cpu: generated from the bundled packages into the work dir; gpu: the generated GPU repository
            model_repository=ROOT / ".devstack" / "gpu-repository" if args.serve == "gpu" else None,
            work_dir=Path(tempfile.mkdtemp(prefix="bench-triton-")),
        )
        server.start(timeout_s=300)
        url = server.grpc_url
    try:
        results = [
            bench_batch(url, x, b, seconds=args.seconds, concurrency=args.concurrency) for b in args.batches
        ]
    finally:
        if server is not None:
            server.stop()
    report = {
        "model": model_spec.MODEL_NAME,
        "repository": args.serve if args.triton_url is None else url,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "seconds_per_batch_size": args.seconds,
        "results": results,
    }
    print(json.dumps(report, indent=2))
    print("\n| batch | concurrency | infer/s | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['batch']} | {r['concurrency']} | {r['infer_per_s']} | {r['requests_per_s']} "
            f"| {r['latency_p50_ms']} | {r['latency_p99_ms']} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
