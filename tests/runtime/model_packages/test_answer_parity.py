"""Parity judged on answers: the rules, the gate on CPU with real FP16 conversions (onnxconverter-common in
onnxruntime), and the engine build's reference/decide steps on a chain (needs, fan-out, buckets, context)
with trtexec's outputs written by the test."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from worker.runtime.model_packages import answers, chain, engine_build, onnx_tools, parity
from worker.runtime.model_packages.declaration import read_declaration

from . import shaped
from .tiny import FEATURES, declaration, write_package

#: tiny's answer rule: the label must not change, the probabilities may move by 0.01.
LABEL_RULE = '\n[parity.answers.tiny_score]\nlabel = "equal"\nscores = { max_abs_error = 0.01 }\n'


def tiny_with_answer_rules(root: Path, name: str = "tiny") -> Path:
    toml = declaration(name).replace("[parity]\nmax_abs_error = 0.01\n", "[parity]\n") + LABEL_RULE
    return write_package(root, name, toml=toml)


def near_tie_onnx(path: Path) -> None:
    """SCORES = softmax(FEATURES @ W): classes 0 and 1 differ by 1e-4 per feature, below FP16's spacing
    at 0.5 (2**-11): in FP16 the two logits are equal and the argmax moves to class 0 for inputs whose
    features sum > 0, while every probability moves by less than 0.001."""
    weights = np.array([[0.5, 0.5001, -1.0]] * FEATURES, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["FEATURES", "W"], ["logits"], name="matmul"),
            helper.make_node("Softmax", ["logits"], ["SCORES"], axis=-1, name="softmax"),
        ],
        "near_tie",
        [helper.make_tensor_value_info("FEATURES", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("SCORES", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_rules_count_what_disagrees_field_by_field() -> None:
    rules = answers.parse_rules(
        {
            "classify": {"label": "equal", "confidence": {"max_abs_error": 0.02}},
            "ocr": {"lines": {"match": "box", "min_iou": 0.9, "equal": ["text"]}},
        },
        ["classify", "ocr"],
    )
    line = {"box": [[0, 0], [100, 0], [100, 20], [0, 20]], "text": "M6x1"}
    reference = [{"classify": {"label": "plate", "confidence": 0.91}, "ocr": {"lines": [line]}}]
    moved = [
        {
            "classify": {"label": "plate", "confidence": 0.90, "scores": [0.3]},
            "ocr": {"lines": [{**line, "box": [[1, 0], [100, 0], [100, 20], [1, 20]], "score": 0.5}]},
        }
    ]
    judged = answers.judge(rules, reference, moved)
    assert answers.disagreements(judged) == 0
    assert judged["ocr"]["lines"].min_iou == pytest.approx(0.99)
    changed = [
        {
            "classify": {"label": "shaft", "confidence": 0.95},
            "ocr": {"lines": [{**line, "text": "M6x7"}, {"box": [0, 50, 10, 60], "text": "extra"}]},
        }
    ]
    judged = answers.judge(rules, reference, changed)
    assert judged["classify"]["label"].disagreements == 1
    assert judged["classify"]["confidence"].disagreements == 1  # off by 0.04
    assert judged["ocr"]["lines"].disagreements == 2  # a text changed, a line appeared
    assert judged["ocr"]["lines"].record()["examples"] == [
        "input 1: lines has 1 elements, the candidate 2 (unpaired)",
        'input 1: lines[0] text "M6x1" -> "M6x7"',
    ]
    with pytest.raises(answers.RuleInvalid, match="no reference answer has this field"):
        answers.judge(answers.parse_rules({"classify": {"lable": "equal"}}, ["classify"]), reference, moved)


def test_the_gate_accepts_fp16_that_moves_only_probabilities_where_raw_tensors_reject_it(
    tmp_path: Path,
) -> None:
    # Given tiny's real FP16 conversion: probabilities move (raw error > 1e-6), labels do not
    raw = chain.load_chain(write_package(tmp_path / "raw", toml=declaration().replace("0.01", "1e-6")))
    judged_on_answers = chain.load_chain(tiny_with_answer_rules(tmp_path / "answers"))
    # When the gate runs on CPU by raw tensors, FP16 is rejected and FP32 chosen
    by_raw = chain.gate_on_cpu(*raw, tmp_path / "w1")
    assert by_raw.chosen == "FP32" and by_raw.rejected == ("FP16",)
    # and by answers, FP16 is chosen: same labels, probabilities within 0.01, the raw error recorded
    by_answers = chain.gate_on_cpu(*judged_on_answers, tmp_path / "w2")
    assert by_answers.chosen == "FP16" and by_answers.rejected == ()
    (fp16,) = by_answers.measured
    print("FP16 raw max abs error", fp16.max_abs_error, "answers", fp16.answers)
    assert fp16.worst > 1e-6 and fp16.disagreements == 0
    assert fp16.answers is not None and fp16.answers["tiny_score"]["label"]["compared"] == 2
    record = by_answers.provenance()
    assert record["rule"] == "answers" and record["measured"][0]["max_abs_error"]["SCORES"] == fp16.worst
    assert record["answer_rules"] == {"tiny_score": {"label": "equal", "scores": {"max_abs_error": 0.01}}}


def test_the_gate_rejects_fp16_that_flips_a_label_where_raw_tensors_would_accept_it(tmp_path: Path) -> None:
    # Given a model whose FP16 conversion makes two logits equal on the first reference input
    raw_folder = write_package(tmp_path / "raw")  # max_abs_error 0.01
    near_tie_onnx(raw_folder / "model.onnx")
    answer_folder = tiny_with_answer_rules(tmp_path / "answers")
    near_tie_onnx(answer_folder / "model.onnx")
    # When judged by raw tensors, FP16 passes: no probability moved by 0.01
    by_raw = chain.gate_on_cpu(*chain.load_chain(raw_folder), tmp_path / "w1")
    assert by_raw.chosen == "FP16" and by_raw.measured[0].worst < 0.001
    # Then judged by answers, FP16 is rejected for the changed label and FP32 chosen
    decision = chain.gate_on_cpu(*chain.load_chain(answer_folder), tmp_path / "w2")
    assert decision.chosen == "FP32" and decision.rejected == ("FP16",)
    fp16, fp32 = decision.measured
    assert fp16.answers is not None and fp16.answers["tiny_score"]["label"]["disagreements"] == 1
    assert fp16.answers["tiny_score"]["label"]["examples"] == ['input 1: label "mid" -> "low"']
    assert fp32.disagreements == 0 and fp32.worst == 0.0


def test_no_precision_giving_the_answers_fails_loudly_naming_what_disagreed(tmp_path: Path) -> None:
    catalog, package = chain.load_chain(tiny_with_answer_rules(tmp_path))
    pages = [
        chain.stage_page(catalog, package, p, {"page": 1}, onnx_tools.OnnxInfer())
        for p in package.reference_inputs()
    ]
    reference = chain.stage_run(package, pages, onnx_tools.OnnxInfer())

    def flipped(_package: Any, batch: Any) -> dict[str, np.ndarray[Any, Any]]:
        scores = onnx_tools.OnnxInfer()(package, batch)["SCORES"]
        return {"SCORES": scores[:, ::-1].copy()}  # a candidate that reverses the classes

    with pytest.raises(parity.NoPrecisionWithinTolerance) as refused:
        parity.choose_precision(
            ["FP16", "FP32"],
            reference=reference,
            run=lambda _p: chain.stage_run(package, pages, flipped, candidate=True),
            rules=package.declaration.parity.answers,
        )
    # reversing the classes changes both inputs' scores and one input's label ("mid" stays "mid")
    assert str(refused.value) == (
        "no precision gives the ONNX reference's answers by [parity.answers] (measured: FP16 3 disagreements "
        "(tiny_score.label, tiny_score.scores), FP32 3 disagreements (tiny_score.label, tiny_score.scores))"
    )


def fake_trtexec_export(path: Path, rows: list[dict[str, Any]], shift: float) -> None:
    """``trtexec --exportOutput``'s JSON of ``rows`` (one dict per batch item) plus ``shift``."""
    exported = []
    for name in rows[0]:
        values = np.asarray([row[name] for row in rows], dtype=np.float64) + shift
        dims = "x".join(str(n) for n in values.shape)
        exported.append({"name": name, "dimensions": dims, "values": values.ravel().tolist()})
    path.write_text(json.dumps(exported), encoding="utf-8")


def test_engine_reference_and_decide_judge_a_fan_out_stage_of_a_chain_on_its_answers(tmp_path: Path) -> None:
    # Given the reader (fan-out crops, width buckets) that needs the detector's regions
    models = tmp_path / "models"
    _, reader = shaped.write_chain(models)
    work = tmp_path / "work"
    # When the boot's reference step runs (the detector first, from the package's parent folder)
    arguments = engine_build.write_reference(reader, work)
    # Then the five crops of both reference pages are one trtexec batch, padded to one shape: no
    # bucket holds the 88-wide crop, so all go to the widest crop (88)
    assert arguments[0] == "--shapes=crop:5x1x8x88"
    assert arguments[1] == f"--loadInputs=crop:{work / 'inputs' / 'input0.bin'}"
    assert (work / "inputs" / "input0.bin").stat().st_size == 5 * 8 * 88 * 4
    rows = json.loads((work / engine_build.REFERENCE_FILE).read_text())
    assert len(rows) == 5 and len(rows[0]["columns"]) == 88
    # and the reference answers, the pad undone by postprocess, are what the worker's grouping gives
    # (only the padded width the test's postprocess reports differs)
    stage = pickle.loads((work / engine_build.STAGE_FILE).read_bytes())
    catalog, _ = chain.load_chain(reader)

    def unpadded(answered: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in line.items() if k != "padded"} for line in answered["text"]["lines"]]

    for page, answered in zip(stage["pages"], stage["answers"], strict=True):
        infer = onnx_tools.OnnxInfer()
        worker = chain.run_plan(catalog, ["text"], Path(page.source).read_bytes(), {"page": 1}, infer)
        assert unpadded(answered) == unpadded(worker) and len(unpadded(worker)) in (2, 3)
        assert {line["padded"] for line in answered["text"]["lines"]} == {88}
    # When trtexec's FP16 outputs move each column's ink by 0.1 (over ink's 0.01 tolerance)
    assert engine_build.decide(reader, work) == ("build", "FP16")
    fake_trtexec_export(work / "FP16.json", rows, shift=0.1)
    # Then FP16 is rejected on the answers and FP32 is asked for
    assert engine_build.decide(reader, work) == ("build", "FP32")
    fake_trtexec_export(work / "FP32.json", rows, shift=0.0)
    assert engine_build.decide(reader, work) == ("chosen", "FP32")
    decision = json.loads((work / engine_build.DECISION_FILE).read_text())
    assert decision["rule"] == "answers" and decision["rejected"] == ["FP16"]
    fp16, fp32 = decision["measured"]
    assert fp16["answers"]["text"]["lines"]["disagreements"] == 5 and fp16["worst"] == pytest.approx(
        0.1, abs=1e-5
    )
    assert fp32["disagreements"] == 0
    assert decision["reference_inputs"] == {"judged": 2, "declared": 2}


def test_reference_inputs_are_taken_while_their_items_fit_one_trtexec_batch(tmp_path: Path) -> None:
    models = tmp_path / "models"
    shaped.write_detector(models)
    toml = shaped.READER_TOML.replace("max_batch_size = 8", "max_batch_size = 4")
    reader = shaped.write_reader(models, toml=toml)
    # the first page gives 2 crops, the second 3: only the first fits a batch of 4
    arguments = engine_build.write_reference(reader, tmp_path / "work")
    assert arguments[0] == "--shapes=crop:2x1x8x32"  # widths 16 and 30: bucket 32 holds both
    stage = pickle.loads((tmp_path / "work" / engine_build.STAGE_FILE).read_bytes())
    assert len(stage["pages"]) == 1 and stage["inputs"] == 2
    too_small = shaped.READER_TOML.replace("max_batch_size = 8", "max_batch_size = 1").replace(
        "preferred_batch_size = 4", "preferred_batch_size = 1"
    )
    reader = shaped.write_reader(tmp_path / "other", toml=too_small)
    shaped.write_detector(tmp_path / "other")
    with pytest.raises(ValueError, match="first reference input gives 2 items, more than max_batch_size 1"):
        engine_build.write_reference(reader, tmp_path / "work2")


def test_raw_tensor_packages_keep_the_raw_reference_and_decision(tmp_path: Path) -> None:
    folder = write_package(tmp_path / "models")
    work = tmp_path / "work"
    arguments = engine_build.write_reference(folder, work)
    assert arguments == ["--shapes=FEATURES:2x4", f"--loadInputs=FEATURES:{work / 'inputs' / 'input0.bin'}"]
    rows = json.loads((work / engine_build.REFERENCE_FILE).read_text())
    fake_trtexec_export(work / "FP16.json", rows, shift=0.001)
    assert engine_build.decide(folder, work) == ("chosen", "FP16")
    decision = json.loads((work / engine_build.DECISION_FILE).read_text())
    assert decision["rule"] == "max_abs_error" and decision["tolerance_max_abs_error"] == 0.01
    assert read_declaration(folder).parity.answers is None
