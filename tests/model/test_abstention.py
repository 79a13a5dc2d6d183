"""The drawing package's abstention policy as pure functions (and worker.dev.model_card), no I/O."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from worker.dev import model_card
from worker.models.drawing_analyzer import abstention, answers, model_spec
from worker.shared import contracts

ROOT = Path(__file__).resolve().parents[2]
VERSION_DIR = model_spec.PACKAGE_DIR
PROTOTYPES = tuple(tuple(float(v) for v in row) for row in np.eye(6, model_spec.EMBEDDING_DIM))
POLICY = abstention.Policy(
    temperature=2.0,
    reject_threshold=0.5,
    unsure_threshold=0.6,
    prototype_threshold=0.5,
    prototypes=PROTOTYPES,
)


def _probs(**named: float) -> np.ndarray:
    """A CLASS_PROBS row: the named classes get their value, the rest share what is left."""
    row = np.zeros(model_spec.NUM_CLASSES, dtype=np.float32)
    for name, value in named.items():
        row[model_spec.OUTPUT_CLASSES.index(name)] = value
    rest = [i for i, name in enumerate(model_spec.OUTPUT_CLASSES) if name not in named]
    row[rest] = (1.0 - sum(named.values())) / len(rest)
    return row


def _near(part_class: str) -> np.ndarray:
    embedding = np.zeros(model_spec.EMBEDDING_DIM, dtype=np.float32)
    embedding[model_spec.CLASS_NAMES.index(part_class)] = 1.0
    return embedding


FAR = np.full(model_spec.EMBEDDING_DIM, 1 / np.sqrt(model_spec.EMBEDDING_DIM), dtype=np.float32)


def test_temperature_one_keeps_the_served_probabilities_and_higher_flattens() -> None:
    p = _probs(gear=0.9)
    np.testing.assert_allclose(abstention.calibrate(p, 1.0), p, atol=1e-6)
    flat = abstention.calibrate(p, 3.0)
    assert flat.max() < 0.9 and flat.argmax() == p.argmax()
    np.testing.assert_allclose(flat.sum(), 1.0)
    # an underflowed zero stays finite
    assert np.isfinite(abstention.calibrate(np.eye(7, dtype=np.float32)[0], 0.5)).all()


def test_a_confident_drawing_near_its_prototype_gets_its_class() -> None:
    decision = abstention.decide(_probs(gear=0.99), _near("gear"), POLICY)
    assert decision.label == "gear"
    assert decision.decided_by == abstention.BY_CLASS
    assert decision.confidence == pytest.approx(float(abstention.calibrate(_probs(gear=0.99), 2.0)[4]))
    assert decision.threshold == 0.6


def test_not_a_drawing_wins_first_even_far_from_prototypes() -> None:
    decision = abstention.decide(_probs(not_a_drawing=0.98), FAR, POLICY)
    assert (decision.label, decision.decided_by) == ("not_a_drawing", abstention.BY_NOT_A_DRAWING)
    assert decision.score == decision.confidence >= 0.5


def test_far_from_every_prototype_is_unsure_however_confident() -> None:
    decision = abstention.decide(_probs(flange=0.999), FAR, POLICY)
    assert (decision.label, decision.decided_by) == ("unsure", abstention.BY_PROTOTYPE)
    assert decision.score == pytest.approx(1 / np.sqrt(model_spec.EMBEDDING_DIM), rel=1e-5)
    # without prototypes the same row is a confident flange
    without = abstention.Policy(temperature=2.0, reject_threshold=0.5, unsure_threshold=0.6)
    assert abstention.decide(_probs(flange=0.999), FAR, without).label == "flange"


def test_a_split_decision_between_part_classes_is_unsure() -> None:
    decision = abstention.decide(_probs(shaft=0.45, pipe_fitting=0.45), _near("shaft"), POLICY)
    assert (decision.label, decision.decided_by) == ("unsure", abstention.BY_CLASS)
    assert decision.confidence < 0.6


def test_wrong_width_and_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="class probabilities"):
        abstention.decide(np.full(6, 1 / 6, dtype=np.float32), FAR, POLICY)
    with pytest.raises(ValueError, match="temperature"):
        abstention.Policy(temperature=0.0, reject_threshold=0.5, unsure_threshold=0.5)
    with pytest.raises(ValueError, match="together"):
        abstention.Policy(
            temperature=1.0, reject_threshold=0.5, unsure_threshold=0.5, prototype_threshold=0.3
        )
    with pytest.raises(ValueError, match="within"):
        abstention.Policy(temperature=1.0, reject_threshold=1.5, unsure_threshold=0.5)


def test_policy_json_round_trip() -> None:
    assert abstention.Policy.from_json(json.loads(json.dumps(POLICY.to_json()))) == POLICY


def test_the_packaged_policy_is_the_one_next_to_the_committed_model() -> None:
    # One copy, in the bundled package next to the ONNX it was fitted on.
    assert abstention.PACKAGED_POLICY == VERSION_DIR / abstention.POLICY_FILE
    policy = abstention.load_policy()
    assert policy.onnx_sha256 == hashlib.sha256((VERSION_DIR / "model.onnx").read_bytes()).hexdigest()
    metrics = json.loads((VERSION_DIR / "model.metrics.json").read_text())
    declared = metrics["abstention"]["policy"]
    assert (policy.temperature, policy.reject_threshold, policy.unsure_threshold) == (
        declared["temperature"],
        declared["reject_threshold"],
        declared["unsure_threshold"],
    )
    assert policy.prototype_threshold == declared["prototype_threshold"]


def test_postprocess_answers_in_the_result_schema() -> None:
    schema = contracts.load_schema("result")
    classify_schema = schema["properties"]["outputs"]["oneOf"][1]["properties"]["classify"]
    for probs, embedding, label in (
        (_probs(gear=0.99), _near("gear"), "gear"),
        (_probs(not_a_drawing=0.99), FAR, "not_a_drawing"),
        (_probs(flange=0.999), FAR, "unsure"),
    ):
        outputs = answers.answer(probs, embedding, ("classify",), POLICY)
        jsonschema.validate(outputs["classify"], classify_schema)
        assert outputs["classify"]["label"] == label
        assert set(outputs["classify"]["scores"]) == set(model_spec.OUTPUT_CLASSES)
        assert outputs["classify"]["decision"]["by"] in abstention.DECIDED_BY


def test_auroc_and_ece() -> None:
    assert model_card.auroc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert model_card.auroc(np.array([0.1]), np.array([0.9])) == 0.0
    assert model_card.auroc(np.array([0.5]), np.array([0.5])) == 0.5
    # perfectly calibrated: in the 0.8 bin 8 of 10 are right
    confidence = np.full(10, 0.8)
    assert model_card.expected_calibration_error(confidence, np.arange(10) < 8) == pytest.approx(0.0)
    assert model_card.expected_calibration_error(confidence, np.ones(10, dtype=bool)) == pytest.approx(0.2)


def test_fit_temperature_recovers_an_overconfident_model() -> None:
    # Given labels drawn from softmax(logits) and a model that reports softmax(3 * logits)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 7))
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(7, p=row) for row in true])
    served = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)
    # Then the fitted temperature is close to 3 and lowers the calibration error
    temperature = model_card.fit_temperature(served, labels)
    assert 2.6 < temperature < 3.4
    assert (
        model_card.closed_set_ece(served, labels, temperature) < model_card.closed_set_ece(served, labels) / 3
    )
