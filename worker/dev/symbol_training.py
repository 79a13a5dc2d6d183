"""Train, calibrate, export and evaluate the symbol recognizer (``make train-symbols``).

The model (docs/model-card-symbols.md) answers which annotation symbols (``drawings.SYMBOL_NAMES``)
a drawing carries: multi-label, one sigmoid per symbol. The input is the whole sheet letterboxed to
``INPUT_SIZE_PX`` (384), twice the drawing model's 192, because a symbol is 12-20 mm on a 420 mm sheet:
at 384 px the smallest is ~11 px, at 192 it would be ~5 px and its strokes would blur into the views.
The whole sheet rather than tiles keeps one tensor per job (no tile batching or aggregation in the
handler), and a CNN with a global max pool sees a symbol wherever it sits.

Steps (one function each, the script ``scripts/train_symbols.py`` calls ``main``):

1. Generate the training (``SYMBOL_TRAIN_SEED``) and calibration (``SYMBOL_CALIBRATION_SEED``) splits at
   a few resolutions, through the package handler's ``sheet_tensor`` (the worker's contract).
2. Train a small CNN (``SymbolNet``) with a per-symbol binary cross-entropy, fixed seeds, deterministic
   kernels, 2 threads.
3. Calibrate: per-symbol Platt scaling (``sigmoid(a * logit + b)``) fitted on the calibration split and
   folded into the last layer, so the ONNX graph's ``SYMBOL_PROBS`` are the calibrated probabilities.
4. Export ONNX (opset 17, ir_version 8, dynamic batch) and check it against torch.
5. Evaluate the exported graph on the held-out split (``SYMBOL_HELDOUT_SEED``: encoded PNG/JPEG bytes
   through the handler's preprocessing) and write ``model.metrics.json``; write the reference inputs.

Torch is imported only inside the training functions (it lives in ``.venv-train``); the figures
(``symbol_figures``) and the held-out set (``heldout_set``) need numpy and Pillow only, so the model
tests reproduce the card with onnxruntime in the product's venv.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from worker.dev import drawings

#: The model's input side in pixels (a letterboxed square of the whole sheet).
INPUT_SIZE_PX: Final = 384  # the handler's INPUT_SIZE_PX (a test keeps them equal)
#: Where the package lives; training writes model.onnx, model.metrics.json and reference/ into it.
PACKAGE_DIR: Final = Path(__file__).resolve().parents[1] / "models" / "symbol_recognizer"
METRICS_FILE: Final = "model.metrics.json"
#: The declared decision threshold on calibrated probabilities (the handler's ``THRESHOLD``).
THRESHOLD: Final = 0.5
#: Split sizes: a few thousand samples keep training within ~10 minutes on 2 CPU cores.
TRAIN_COUNT: Final = 3000
CALIBRATION_COUNT: Final = 400
HELDOUT_COUNT: Final = 240
#: Training renders at several sheet resolutions (A4 at 75-113 dpi) so the model does not depend on dpi;
#: the held-out set is A4 at 75 dpi, every third one JPEG, as bytes through the handler's decode.
TRAIN_SIZES: Final[tuple[tuple[int, int], ...]] = ((877, 620), (1096, 775), (1315, 930))
HELDOUT_SIZE: Final = (877, 620)
#: The package's reference inputs (parity gate, ``fleet models check``): held-out drawings 0-3.
REFERENCE_COUNT: Final = 4
SEED: Final = 20260116
EPOCHS: Final = 20
BATCH: Final = 32
LEARNING_RATE: Final = 4e-3

FloatArray = npt.NDArray[np.float32]


def _handler() -> Any:
    """The package's handler module: training and evaluation prepare pixels exactly as the worker does."""
    spec = importlib.util.spec_from_file_location("symbol_recognizer_handler", PACKAGE_DIR / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HANDLER: Final = _handler()


def multi_hot(present: Sequence[str]) -> FloatArray:
    """``[len(SYMBOL_NAMES)]`` with 1.0 where a symbol is present."""
    return np.array([1.0 if name in present else 0.0 for name in drawings.SYMBOL_NAMES], dtype=np.float32)


def _train_item(index: int) -> tuple[npt.NDArray[np.uint8], FloatArray]:
    return _split_item(index, drawings.SYMBOL_TRAIN_SEED)


def _calibration_item(index: int) -> tuple[npt.NDArray[np.uint8], FloatArray]:
    return _split_item(index, drawings.SYMBOL_CALIBRATION_SEED)


def _split_item(index: int, seed: int) -> tuple[npt.NDArray[np.uint8], FloatArray]:
    size = TRAIN_SIZES[index % len(TRAIN_SIZES)]
    image, present = drawings.render_symbol_image(drawings.dataset_seed(index, seed=seed), size=size)
    tensor = HANDLER.sheet_tensor(image)
    # The contract's values are multiples of 1/255, so uint8 holds them exactly (4x less memory).
    return np.rint(tensor * 255).astype(np.uint8), multi_hot(present)


def heldout_item(index: int) -> tuple[FloatArray, FloatArray]:
    """Held-out drawing ``index``: encoded, then decoded by the handler's preprocessing; its labels."""
    data, present = heldout_bytes(index)
    return HANDLER.preprocess(data, {})["SHEET"], multi_hot(present)


def heldout_bytes(index: int) -> tuple[bytes, tuple[str, ...]]:
    """The encoded held-out drawing ``index`` (every third one JPEG) and the symbols it carries."""
    return drawings.render_symbol_drawing(
        drawings.dataset_seed(index, seed=drawings.SYMBOL_HELDOUT_SEED),
        size=HELDOUT_SIZE,
        fmt="jpeg" if index % 3 == 2 else "png",
    )


def heldout_set(count: int = HELDOUT_COUNT, *, workers: int = 1) -> tuple[FloatArray, FloatArray]:
    """The held-out tensors ``[count, 1, 384, 384]`` and labels ``[count, symbols]``."""
    items = _map(heldout_item, count, workers)
    return np.stack([x for x, _ in items]), np.stack([y for _, y in items])


def _map(function: Any, count: int, workers: int) -> list[Any]:
    if workers <= 1:
        return [function(i) for i in range(count)]
    # fork: the workers inherit the imported generator; results come back in index order.
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return list(pool.map(function, range(count), chunksize=16))


# --- figures (numpy only: the card's test recomputes them) ---------------------------------------------
def auroc(scores: npt.NDArray[Any], labels: npt.NDArray[Any]) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); NaN without both classes."""
    positives = labels > 0.5
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # mid-ranks over runs of equal scores
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_calibration_error(scores: npt.NDArray[Any], labels: npt.NDArray[Any], bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width probability bins, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.sum() * abs(float(labels[mask].mean()) - float(scores[mask].mean()))
    return total / len(scores)


def symbol_figures(
    probs: npt.NDArray[Any], labels: npt.NDArray[Any], threshold: float = THRESHOLD
) -> dict[str, dict[str, float]]:
    """Per symbol: precision, recall, F1 at ``threshold``, AUROC, Brier score, ECE, and the counts."""
    out: dict[str, dict[str, float]] = {}
    for j, name in enumerate(drawings.SYMBOL_NAMES):
        p, y = probs[:, j].astype(np.float64), labels[:, j] > 0.5
        decided = p >= threshold
        tp, fp, fn = int((decided & y).sum()), int((decided & ~y).sum()), int((~decided & y).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        out[name] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(2 * precision * recall / (precision + recall) if precision + recall else 0.0, 4),
            "auroc": round(auroc(p, y), 4),
            "brier": round(float(np.mean((p - y) ** 2)), 4),
            "ece": round(expected_calibration_error(p, y.astype(np.float64)), 4),
            "positives": int(y.sum()),
            "negatives": int((~y).sum()),
        }
    return out


def macro(figures: dict[str, dict[str, float]], key: str) -> float:
    """The unweighted mean of one figure over the symbols."""
    return round(float(np.mean([f[key] for f in figures.values()])), 4)


def fit_platt(
    logits: npt.NDArray[Any], labels: npt.NDArray[Any], iterations: int = 50
) -> tuple[float, float]:
    """``(a, b)`` minimising the log loss of ``sigmoid(a * logit + b)`` (Newton's method, ridge 1e-6)."""
    a, b = 1.0, 0.0
    x, y = logits.astype(np.float64), labels.astype(np.float64)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a * x + b)))
        w = p * (1.0 - p)
        gradient = np.array([np.sum((p - y) * x), np.sum(p - y)])
        hessian = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]]) + 1e-6 * np.eye(
            2
        )
        step = np.linalg.solve(hessian, gradient)
        a, b = a - float(step[0]), b - float(step[1])
        if float(np.abs(step).max()) < 1e-9:
            break
    return a, b


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file: the metrics name the ONNX they describe."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- training (torch, .venv-train) ---------------------------------------------------------------------
def build_net() -> Any:
    """``SymbolNet``: a 4x4/4 patch stem, four 3x3 conv blocks, global max and mean pools, one linear layer.

    ~67 k parameters (~0.3 MB); the stem's stride 4 keeps a 384 px input within the CPU budget. The max
    pool answers "is it anywhere on the sheet", the question a presence label asks; the mean pool next
    to it gives every position a gradient, which makes the weak (image-level) labels learn faster.
    """
    import torch  # noqa: PLC0415 - torch lives in .venv-train
    from torch import nn  # noqa: PLC0415

    def block(cin: int, cout: int, stride: int) -> list[Any]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    class Pools(nn.Module):  # type: ignore[misc]
        def forward(self, x: Any) -> Any:
            return torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)

    return nn.Sequential(
        nn.Conv2d(1, 16, 4, 4, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        *block(16, 32, 2),
        *block(32, 32, 1),
        *block(32, 64, 2),
        *block(64, 64, 1),
        Pools(),
        nn.Linear(128, len(drawings.SYMBOL_NAMES)),
    )


def _logits(net: Any, x: npt.NDArray[np.uint8], batch: int = 64) -> FloatArray:
    import torch  # noqa: PLC0415

    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(net(torch.from_numpy(x[i : i + batch].astype(np.float32) / 255.0)).numpy())
    return np.concatenate(out)


def train_net(x: npt.NDArray[np.uint8], y: FloatArray, *, epochs: int = EPOCHS) -> Any:
    """Fit ``build_net()`` with BCE, Adam and a cosine schedule; deterministic for fixed inputs."""
    import torch  # noqa: PLC0415
    from torch.nn import functional as F  # noqa: PLC0415

    torch.manual_seed(SEED)
    net = build_net()
    optimiser = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x) / BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, LEARNING_RATE, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(SEED)
    targets = torch.from_numpy(y)
    for epoch in range(epochs):
        net.train()
        started, total = time.monotonic(), 0.0
        order = torch.randperm(len(x), generator=generator).numpy()
        for i in range(0, len(x), BATCH):
            idx = order[i : i + BATCH]
            batch = torch.from_numpy(x[idx].astype(np.float32) / 255.0)
            loss = F.binary_cross_entropy_with_logits(net(batch), targets[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f} ({time.monotonic() - started:.0f} s)")
    return net


def fold_calibration(net: Any, platt: Sequence[tuple[float, float]]) -> None:
    """Scale the last layer so that its logits are ``a * logit + b``: the graph emits calibrated values."""
    import torch  # noqa: PLC0415

    last = net[-1]
    a = torch.tensor([p[0] for p in platt], dtype=torch.float32)
    b = torch.tensor([p[1] for p in platt], dtype=torch.float32)
    with torch.no_grad():
        last.weight.mul_(a[:, None])
        last.bias.copy_(last.bias * a + b)


def export_onnx(net: Any, path: Path) -> None:
    """``SHEET [batch, 1, 384, 384]`` -> ``SYMBOL_PROBS [batch, symbols]`` (sigmoid in the graph)."""
    import onnx  # noqa: PLC0415
    import torch  # noqa: PLC0415

    model = torch.nn.Sequential(net, torch.nn.Sigmoid()).eval()
    dummy = torch.zeros(1, 1, INPUT_SIZE_PX, INPUT_SIZE_PX)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["SHEET"],
        output_names=["SYMBOL_PROBS"],
        dynamic_axes={"SHEET": {0: "batch"}, "SYMBOL_PROBS": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    graph = onnx.load(str(path))
    graph.ir_version = 8  # the onnxruntime inside tritonserver's venv reads IR 8
    graph.producer_version = ""  # no torch build string in the file: same weights, same bytes
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))


def onnx_probs(path: Path, x: npt.NDArray[Any], batch: int = 32) -> FloatArray:
    """``SYMBOL_PROBS`` of ``x`` (float in [0, 1], or uint8 x 255) through onnxruntime on one thread."""
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        feed = chunk.astype(np.float32) / 255.0 if chunk.dtype == np.uint8 else chunk.astype(np.float32)
        out.append(session.run(["SYMBOL_PROBS"], {"SHEET": feed})[0])
    return np.concatenate(out)


def write_references(folder: Path) -> list[str]:
    """The first ``REFERENCE_COUNT`` held-out drawings as PNG (parity gate and ``fleet models check``)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(REFERENCE_COUNT):
        data, present = drawings.render_symbol_drawing(
            drawings.dataset_seed(i, seed=drawings.SYMBOL_HELDOUT_SEED), size=HELDOUT_SIZE
        )
        (folder / f"heldout-{i}.png").write_bytes(data)
        names.append(f"heldout-{i}.png: {', '.join(present) or '(none)'}")
    return names


def main(out: Path = PACKAGE_DIR, *, epochs: int = EPOCHS, train_count: int = TRAIN_COUNT) -> dict[str, Any]:
    """Everything ``make train-symbols`` does; returns the metrics written to ``out/model.metrics.json``."""
    import torch  # noqa: PLC0415

    torch.use_deterministic_algorithms(True)
    threads = int(os.environ.get("TRAIN_THREADS", "2"))
    torch.set_num_threads(threads)
    started = time.monotonic()
    train = _map(_train_item, train_count, threads)
    calibration = _map(_calibration_item, CALIBRATION_COUNT, threads)
    x, y = np.stack([a for a, _ in train]), np.stack([b for _, b in train])
    xc, yc = np.stack([a for a, _ in calibration]), np.stack([b for _, b in calibration])
    generated_s = time.monotonic() - started
    print(f"generated {len(x)} training + {len(xc)} calibration sheets in {generated_s:.0f} s")
    net = train_net(x, y, epochs=epochs)
    trained_s = time.monotonic() - started - generated_s
    raw = _logits(net, xc)
    platt = [fit_platt(raw[:, j], yc[:, j]) for j in range(len(drawings.SYMBOL_NAMES))]
    fold_calibration(net, platt)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    export_onnx(net, onnx_path)
    torch_probs = 1.0 / (1.0 + np.exp(-_logits(net, xc)))
    parity = float(np.abs(onnx_probs(onnx_path, xc) - torch_probs).max())
    xh, yh = heldout_set(workers=threads)
    heldout = symbol_figures(onnx_probs(onnx_path, xh), yh)
    metrics: dict[str, Any] = {
        "model": "symbol_recognizer",
        "onnx_sha256": sha256_file(onnx_path),
        "onnx_bytes": onnx_path.stat().st_size,
        "input_size_px": INPUT_SIZE_PX,
        "symbols": list(drawings.SYMBOL_NAMES),
        "threshold": THRESHOLD,
        "heldout": {
            "seed": drawings.SYMBOL_HELDOUT_SEED,
            "count": len(xh),
            "size": list(HELDOUT_SIZE),
            "formats": "PNG, every third JPEG",
            "per_symbol": heldout,
            "macro": {k: macro(heldout, k) for k in ("precision", "recall", "f1", "auroc", "ece")},
        },
        "calibration": {
            "seed": drawings.SYMBOL_CALIBRATION_SEED,
            "count": len(xc),
            "platt": {
                n: {"a": round(a, 6), "b": round(b, 6)}
                for n, (a, b) in zip(drawings.SYMBOL_NAMES, platt, strict=True)
            },
            "ece_before": {n: f["ece"] for n, f in symbol_figures(1.0 / (1.0 + np.exp(-raw)), yc).items()},
            "ece_after": {n: f["ece"] for n, f in symbol_figures(torch_probs, yc).items()},
        },
        "training": {
            "seed": drawings.SYMBOL_TRAIN_SEED,
            "count": len(x),
            "sizes": [list(s) for s in TRAIN_SIZES],
            "epochs": epochs,
            "batch": BATCH,
            "learning_rate": LEARNING_RATE,
            "torch_seed": SEED,
            "threads": threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "generate_s": round(generated_s, 1),
            "train_s": round(trained_s, 1),
            "total_s": round(time.monotonic() - started, 1),
        },
        "onnx_vs_torch_max_abs_error": parity,
        "parameters": sum(p.numel() for p in net.parameters()),
        "references": write_references(out / "reference"),
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics
