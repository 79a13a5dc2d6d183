#!/usr/bin/env python3
"""Parity of a served drawing_analyzer variant against the ONNX reference on the fixed held-out set.

The reference is ``worker/models/drawing_analyzer/model.onnx`` run by onnxruntime on CPU. The
variant is whatever a tritonserver serves as ``drawing_analyzer``: the CPU repository (python backend +
onnxruntime, expected identical), or the GPU repository with a TensorRT engine installed by
``scripts/build_trt_engine --install`` (expect ~1e-4 for FP32, more for FP16/INT8).

Reports max absolute difference of both outputs, class agreement (argmax equal) and each side's accuracy;
exits 1 when agreement is below ``--min-agreement`` (99.5%: the bar for making FP16 the default).

    .venv/bin/python scripts/parity_check.py --serve cpu                  # private tritonserver, CPU repo
    .venv/bin/python scripts/parity_check.py --serve gpu                  # on a GPU VM, after --install
    .venv/bin/python scripts/parity_check.py --triton-url 127.0.0.1:8001  # an already running server
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.dev import drawings  # noqa: E402
from worker.models.drawing_analyzer import abstention, model_spec, preprocessing  # noqa: E402

ONNX = model_spec.ONNX_PATH
#: The GPU repository: ``fleet models repository worker/models --variant gpu --out`` it, then
#: ``scripts/build_trt_engine --install`` puts the engine in it.
GPU_REPOSITORY = ROOT / ".devstack" / "gpu-repository"


def _heldout_item(index: int) -> tuple[np.ndarray, int]:
    # Identical to drawings.dataset(HELDOUT_COUNT, seed=HELDOUT_SEED, fmt="mixed") item ``index`` and to
    # the held-out set scripts/train_model.py reports on.
    label = model_spec.CLASS_NAMES[index % len(model_spec.CLASS_NAMES)]
    fmt: drawings.Format = "jpeg" if index % 3 == 2 else "png"
    data, _ = drawings.render_drawing(
        drawings.dataset_seed(index, seed=drawings.HELDOUT_SEED), label, fmt=fmt
    )
    return preprocessing.preprocess_bytes(data), model_spec.CLASS_NAMES.index(label)


def heldout_set(count: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        items = pool.map(_heldout_item, range(count), chunksize=16)
    return np.stack([x for x, _ in items]), np.array([y for _, y in items])


def run_reference(x: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])
    names = [spec.name for spec in model_spec.OUTPUTS]
    parts = [session.run(names, {model_spec.INPUT.name: x[i : i + batch]}) for i in range(0, len(x), batch)]
    return np.concatenate([p for p, _ in parts]), np.concatenate([e for _, e in parts])


def run_triton(url: str, x: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    probs, embs = [], []
    with grpcclient.InferenceServerClient(url) as client:
        for i in range(0, len(x), batch):
            chunk = x[i : i + batch]
            tensor = grpcclient.InferInput(
                model_spec.INPUT.name, list(chunk.shape), model_spec.INPUT.triton_dtype
            )
            tensor.set_data_from_numpy(chunk)
            result = client.infer(model_spec.MODEL_NAME, [tensor])
            probs.append(result.as_numpy(model_spec.OUTPUT_PROBS.name))
            embs.append(result.as_numpy(model_spec.OUTPUT_EMBEDDING.name))
    return np.concatenate(probs), np.concatenate(embs)


def compare(
    ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray], labels: np.ndarray
) -> dict[str, float]:
    policy = abstention.load_policy()
    return {
        "count": len(labels),
        "max_abs_diff_class_probs": float(np.abs(ref[0] - got[0]).max()),
        "max_abs_diff_embedding": float(np.abs(ref[1] - got[1]).max()),
        "class_agreement": float((ref[0].argmax(1) == got[0].argmax(1)).mean()),
        "reference_accuracy": float((ref[0].argmax(1) == labels).mean()),
        "variant_accuracy": float((got[0].argmax(1) == labels).mean()),
        # What a client sees: the worker's answer (part class, not_a_drawing or unsure) on both sides.
        "answer_agreement": float(
            np.mean(
                [
                    a.label == b.label
                    for a, b in zip(
                        abstention.decide_batch(ref[0], ref[1], policy),
                        abstention.decide_batch(got[0], got[1], policy),
                        strict=True,
                    )
                ]
            )
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--triton-url", help="host:port of a tritonserver serving drawing_analyzer")
    source.add_argument(
        "--serve", choices=("cpu", "gpu"), help="start a private tritonserver on that repository"
    )
    parser.add_argument("--count", type=int, default=drawings.HELDOUT_COUNT)
    parser.add_argument("--batch", type=int, default=model_spec.MAX_BATCH_SIZE)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--min-agreement", type=float, default=0.995)
    parser.add_argument("--out", type=Path, help="write the report JSON here too")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    x, y = heldout_set(args.count, args.workers)
    reference = run_reference(x, args.batch)
    server = None
    url = args.triton_url
    if args.serve:
        from worker.dev.devstack.tritonserver import TritonServer  # noqa: PLC0415 (needs .venv-triton)

        server = TritonServer(
            # cpu: generated from the bundled packages into the work dir; gpu: the generated GPU repository
            model_repository=GPU_REPOSITORY if args.serve == "gpu" else None,
            work_dir=Path(tempfile.mkdtemp(prefix="parity-triton-")),
        )
        server.start(timeout_s=300)
        url = server.grpc_url
    try:
        variant = run_triton(url, x, args.batch)
    finally:
        if server is not None:
            server.stop()
    report = {"variant": args.serve or url, **compare(reference, variant, y)}
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if report["class_agreement"] < args.min_agreement:
        print(f"FAILED: class agreement below {args.min_agreement}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
