#!/usr/bin/env python3
"""Train the symbol recognizer on generated drawings and export it to ONNX (``make train-symbols``).

Thin entry point: the recipe is ``worker.dev.symbol_training`` (docs/model-card-symbols.md). Runs in
``.venv-train`` (CPU torch), 2 threads (``TRAIN_THREADS``), under ~10 minutes on 2 cores; writes
model.onnx, model.metrics.json and reference/ into worker/models/symbol_recognizer/ (or ``--out``).

Usage: ``.venv-train/bin/python scripts/train_symbols.py [--epochs N] [--train-count N] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.dev import symbol_training


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=symbol_training.PACKAGE_DIR)
    parser.add_argument("--epochs", type=int, default=symbol_training.EPOCHS)
    parser.add_argument("--train-count", type=int, default=symbol_training.TRAIN_COUNT)
    args = parser.parse_args(argv)
    metrics = symbol_training.main(args.out, epochs=args.epochs, train_count=args.train_count)
    print(json.dumps(metrics["heldout"]["macro"]), f"onnx {metrics['onnx_bytes']} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
