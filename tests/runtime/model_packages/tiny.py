"""A model package written by a test: a tiny ONNX graph made here and a few lines of pre/postprocess."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES = 4
CLASSES = 3


def tiny_onnx(
    path: Path, *, seed: int = 0, input_name: str = "FEATURES", output_name: str = "SCORES"
) -> None:
    """``SCORES = softmax(FEATURES @ W + B)``, batch axis dynamic: small enough to build in a test."""
    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.normal(0, 3, (FEATURES, CLASSES)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(0, 1, (CLASSES,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [input_name, "W"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], [output_name], axis=-1),
        ],
        "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by the onnxruntime in tritonserver's venv too
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


HANDLER = textwrap.dedent(
    '''
    """Tiny test model: the input is a JSON list of four numbers."""
    import json

    import numpy as np

    LABELS = ("low", "mid", "high")


    def preprocess(data, params):
        values = json.loads(data)
        scale = float(params.get("scale", 1.0))
        return {"FEATURES": np.asarray(values, dtype=np.float32) * scale}


    def postprocess(outputs, params):
        scores = outputs["SCORES"]
        return {"tiny_score": {"label": LABELS[int(np.argmax(scores))], "scores": scores.round(6).tolist()}}
    '''
)


def declaration(
    name: str = "tiny", analyses: str = '[[analyses]]\nname = "tiny_score"\noutputs = ["SCORES"]\n'
) -> str:
    return (
        f'[model]\nname = "{name}"\nversion = "1"\n'
        "max_batch_size = 8\npreferred_batch_size = 4\ninstances = 1\n\n"
        f'[[inputs]]\nname = "FEATURES"\ndtype = "FP32"\nshape = [{FEATURES}]\n\n'
        f'[[outputs]]\nname = "SCORES"\ndtype = "FP32"\nshape = [{CLASSES}]\n\n'
        f"{analyses}\n"
        '[limits]\nmax_input_bytes = 1024\nformats = ["JSON"]\n\n'
        '[parity]\nmax_abs_error = 0.01\nreference_inputs = ["reference/*.json"]\n'
    )


def write_package(
    root: Path, name: str = "tiny", *, handler: str = HANDLER, toml: str | None = None, seed: int = 0
) -> Path:
    """``root/<name>/`` with model.toml, model.onnx (weights from ``seed``), handler.py and two reference
    inputs."""
    folder = root / name
    (folder / "reference").mkdir(parents=True)
    tiny_onnx(folder / "model.onnx", seed=seed)
    (folder / "handler.py").write_text(handler, encoding="utf-8")
    (folder / "model.toml").write_text(toml if toml is not None else declaration(name), encoding="utf-8")
    (folder / "reference" / "a.json").write_text("[1, 2, 3, 4]", encoding="utf-8")
    (folder / "reference" / "b.json").write_text("[-1, 0.5, 2, -3]", encoding="utf-8")
    return folder


#: Needs alpha's answer, which arrives in params["needs"] of both functions.
BETA_HANDLER = textwrap.dedent(
    """
    import json
    import numpy as np

    def preprocess(data, params):
        alpha = params["needs"]["alpha_score"]
        scale = 2.0 if alpha["label"] == "high" else 1.0
        return {"FEATURES": np.asarray(json.loads(data), dtype=np.float32) * scale}

    def postprocess(outputs, params):
        return {"beta_score": {"after": params["needs"]["alpha_score"]["label"],
                               "best": int(np.argmax(outputs["SCORES"]))}}
    """
)


def analysis(name: str, needs: str = "") -> str:
    """One ``[[analyses]]`` entry on SCORES; ``needs`` is the TOML list's inside (``'"alpha_score"'``)."""
    return f'[[analyses]]\nname = "{name}"\noutputs = ["SCORES"]\nneeds = [{needs}]\n'


def write_chain(root: Path) -> tuple[Path, Path]:
    """Packages ``alpha`` (analysis alpha_score) and ``beta`` (beta_score, which needs alpha_score) in
    ``root``; beta has its own weights, so its answer cannot be alpha's by accident."""
    alpha = write_package(
        root,
        "alpha",
        handler=HANDLER.replace('"tiny_score"', '"alpha_score"'),
        toml=declaration("alpha", analysis("alpha_score")),
    )
    beta = write_package(
        root,
        "beta",
        handler=BETA_HANDLER,
        toml=declaration("beta", analysis("beta_score", '"alpha_score"')),
        seed=1,
    )
    return alpha, beta
