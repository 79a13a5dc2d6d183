"""Answer-level parity rules: how a package's post-processed answers must agree with the ONNX reference's.

Raw tensors are the wrong thing to judge for many models: an FP16 recogniser may move a probability by
0.4 without changing one character, while an FP16 detector may keep every probability within 0.05 and
still lose boxes. A package therefore declares, per analysis, which fields of its answer must agree
and how (``[parity.answers.<analysis>]`` in ``model.toml``, docs/models.md "Parity")::

    [parity.answers.classify]
    label = "equal"                               # the same JSON value
    confidence = { max_abs_error = 0.02 }         # numbers (or lists of numbers) within a tolerance

    [parity.answers.ocr]                          # a list of objects, matched element to element
    lines = { match = "box", min_iou = 0.9, equal = ["text"], max_abs_error = { score = 0.05 } }

Fields a rule does not name are not judged. ``match = "order"`` pairs the lists' elements by position;
``match = "box"`` pairs each reference element with the unused candidate element whose ``box`` (a list of
``[x, y]`` points or ``[x0, y0, x1, y1]``) overlaps it most, by the IoU of their axis-aligned extents. Every
reference element without a partner at ``min_iou``, every candidate element left over, and every pair
whose ``equal``/``max_abs_error`` fields differ counts one disagreement. A candidate is accepted only
with no disagreement. Parsing raises ``RuleInvalid`` naming the field (the declaration reports it as
the package's problem); judging is pure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

#: How list elements are paired.
MATCHES: Final = ("order", "box")

Kind = Literal["equal", "close", "match"]


class RuleInvalid(ValueError):
    """A ``[parity.answers]`` entry that is not a rule; the message names the field."""


@dataclass(frozen=True)
class FieldRule:
    """The rule of one field of an analysis's answer."""

    field: str
    kind: Kind
    #: ``close``: the largest absolute difference allowed.
    max_abs_error: float = 0.0
    #: ``match``: how elements are paired, the smallest IoU of a pair (``box``), the element fields that
    #: must be equal and those that must be within a tolerance.
    match: str = "order"
    min_iou: float = 0.0
    equal: tuple[str, ...] = ()
    close: tuple[tuple[str, float], ...] = ()

    def describe(self) -> Any:
        """The rule as written in model.toml (for the decision's provenance)."""
        if self.kind == "equal":
            return "equal"
        if self.kind == "close":
            return {"max_abs_error": self.max_abs_error}
        described: dict[str, Any] = {"match": self.match, "equal": list(self.equal)}
        if self.match == "box":
            described["min_iou"] = self.min_iou
        if self.close:
            described["max_abs_error"] = dict(self.close)
        return described


@dataclass(frozen=True)
class AnswerRules:
    """Per analysis of one package, the rules of its answer's fields."""

    analyses: tuple[tuple[str, tuple[FieldRule, ...]], ...]

    def describe(self) -> dict[str, dict[str, Any]]:
        return {name: {r.field: r.describe() for r in rules} for name, rules in self.analyses}


@dataclass
class FieldMeasure:
    """What judging one field over every reference input measured."""

    compared: int = 0
    disagreements: int = 0
    max_abs_error: float | None = None
    min_iou: float | None = None
    examples: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"compared": self.compared, "disagreements": self.disagreements}
        if self.max_abs_error is not None:
            out["max_abs_error"] = self.max_abs_error
        if self.min_iou is not None:
            out["min_iou"] = self.min_iou
        if self.examples:
            out["examples"] = self.examples
        return out

    def differ(self, where: str) -> None:
        self.disagreements += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(where)

    def saw_error(self, value: float) -> None:
        self.max_abs_error = value if self.max_abs_error is None else max(self.max_abs_error, value)

    def saw_iou(self, value: float) -> None:
        self.min_iou = value if self.min_iou is None else min(self.min_iou, value)


#: Disagreements described by name in a measure (the rest are counted).
MAX_EXAMPLES: Final = 5


def parse_rules(table: object, analyses: Sequence[str]) -> AnswerRules:
    """``[parity.answers]`` -> rules; every analysis of the package must have a table (empty: not judged)."""
    if not isinstance(table, dict):
        raise RuleInvalid("[parity.answers] must be a table of analyses")
    unknown = sorted(set(table) - set(analyses))
    if unknown:
        raise RuleInvalid(f"parity.answers names {unknown}, not analyses of this package")
    missing = [a for a in analyses if a not in table]
    if missing:
        raise RuleInvalid(
            f"parity.answers has no rule for {missing}: give each analysis a table ([parity.answers.<name>], "
            "empty when its answer is not judged)",
        )
    parsed = []
    for analysis in analyses:
        fields = table[analysis]
        if not isinstance(fields, dict):
            raise RuleInvalid(f"parity.answers.{analysis} must be a table of fields")
        rules = tuple(_parse_field(f"parity.answers.{analysis}.{k}", k, v) for k, v in fields.items())
        parsed.append((analysis, rules))
    return AnswerRules(tuple(parsed))


def _tolerance(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise RuleInvalid(f"{where} must be a number >= 0")
    return float(value)


def _parse_field(where: str, name: str, value: object) -> FieldRule:
    if value == "equal":
        return FieldRule(name, "equal")
    if not isinstance(value, dict):
        raise RuleInvalid(f'{where} must be "equal", {{ max_abs_error = x }} or {{ match = ... }}')
    if "match" not in value:
        if set(value) != {"max_abs_error"}:
            raise RuleInvalid(f"{where} must be {{ max_abs_error = x }} (or name a match)")
        return FieldRule(name, "close", max_abs_error=_tolerance(where, value["max_abs_error"]))
    known = {"match", "min_iou", "equal", "max_abs_error"}
    if set(value) - known:
        raise RuleInvalid(f"{where} has unknown keys {sorted(set(value) - known)}")
    match = value["match"]
    if match not in MATCHES:
        raise RuleInvalid(f"{where}.match must be one of {', '.join(MATCHES)}")
    min_iou = 0.0
    if match == "box":
        min_iou = _tolerance(f"{where}.min_iou", value.get("min_iou"))
        if not 0 < min_iou <= 1:
            raise RuleInvalid(f"{where}.min_iou must be in (0, 1]")
    elif "min_iou" in value:
        raise RuleInvalid(f'{where}.min_iou needs match = "box"')
    equal = value.get("equal", [])
    if not isinstance(equal, list) or not all(isinstance(e, str) and e for e in equal):
        raise RuleInvalid(f"{where}.equal must be a list of field names")
    close = value.get("max_abs_error", {})
    if not isinstance(close, dict):
        raise RuleInvalid(f"{where}.max_abs_error must be a table of field = tolerance")
    tolerances = tuple((k, _tolerance(f"{where}.max_abs_error.{k}", v)) for k, v in close.items())
    return FieldRule(name, "match", match=match, min_iou=min_iou, equal=tuple(equal), close=tolerances)


Answers = Sequence[Mapping[str, Any]]
Measures = dict[str, dict[str, FieldMeasure]]


def judge(rules: AnswerRules, reference: Answers, candidate: Answers) -> Measures:
    """Each rule over every reference input (answers per input, keyed by analysis): what disagrees.

    A rule on a field that no reference answer has raises RuleInvalid: it would judge nothing.
    """
    if len(reference) != len(candidate):
        raise ValueError(f"{len(candidate)} candidate answers for {len(reference)} reference inputs")
    measures: Measures = {}
    for analysis, field_rules in rules.analyses:
        measures[analysis] = {}
        for rule in field_rules:
            measure = FieldMeasure()
            for index, (ref, got) in enumerate(zip(reference, candidate, strict=True)):
                where = f"input {index + 1}"
                _judge_field(
                    rule, _field(ref, analysis, rule.field), _field(got, analysis, rule.field), measure, where
                )
            if reference and all(_field(ref, analysis, rule.field) is _MISSING for ref in reference):
                raise RuleInvalid(
                    f"parity.answers.{analysis}.{rule.field}: no reference answer has this field (one is "
                    f"{_short(reference[0].get(analysis, 'missing'))}); the rule would judge nothing"
                )
            measures[analysis][rule.field] = measure
    return measures


def disagreements(measures: Measures) -> int:
    return sum(m.disagreements for fields in measures.values() for m in fields.values())


_MISSING: Final = object()


def _field(answers: Mapping[str, Any], analysis: str, name: str) -> Any:
    answer = answers.get(analysis, _MISSING)
    if not isinstance(answer, Mapping):
        return _MISSING
    return answer.get(name, _MISSING)


def _judge_field(rule: FieldRule, ref: Any, got: Any, measure: FieldMeasure, where: str) -> None:
    if ref is _MISSING and got is _MISSING:
        return
    if rule.kind == "match":
        _judge_list(rule, ref, got, measure, where)
        return
    measure.compared += 1
    if ref is _MISSING or got is _MISSING:
        measure.differ(f"{where}: {rule.field} missing")
    elif rule.kind == "equal":
        if _normal(ref) != _normal(got):
            measure.differ(f"{where}: {rule.field} {_short(ref)} -> {_short(got)}")
    else:
        error = _abs_error(ref, got)
        measure.saw_error(error)
        if error > rule.max_abs_error:
            measure.differ(f"{where}: {rule.field} off by {error:.3g}")


def _judge_list(rule: FieldRule, ref: Any, got: Any, measure: FieldMeasure, where: str) -> None:
    refs = ref if isinstance(ref, list) else []
    gots = got if isinstance(got, list) else []
    measure.compared += len(refs)
    pairs = (
        _pairs_by_box(refs, gots, rule, measure)
        if rule.match == "box"
        else list(zip(range(len(refs)), range(len(gots)), strict=False))
    )
    unpaired = len(refs) + len(gots) - 2 * len(pairs)
    for _ in range(unpaired):
        measure.differ(
            f"{where}: {rule.field} has {len(refs)} elements, the candidate {len(gots)} (unpaired)"
        )
    for index, other in pairs:
        ref_element, got_element = refs[index], gots[other]
        problems = [
            f"{name} {_short(_get(ref_element, name))} -> {_short(_get(got_element, name))}"
            for name in rule.equal
            if _normal(_get(ref_element, name)) != _normal(_get(got_element, name))
        ]
        for name, tolerance in rule.close:
            error = _abs_error(_get(ref_element, name), _get(got_element, name))
            measure.saw_error(error)
            if error > tolerance:
                problems.append(f"{name} off by {error:.3g}")
        if problems:
            measure.differ(f"{where}: {rule.field}[{index}] {', '.join(problems)}")


def _pairs_by_box(
    refs: list[Any], gots: list[Any], rule: FieldRule, measure: FieldMeasure
) -> list[tuple[int, int]]:
    """Each reference element's index with the unused candidate's whose box overlaps it most (at
    ``min_iou``)."""
    free = list(range(len(gots)))
    pairs = []
    for index, element in enumerate(refs):
        scored = [(_iou(_get(element, "box"), _get(gots[i], "box")), i) for i in free]
        if not scored:
            break
        best, other = max(scored)
        measure.saw_iou(best)
        if best >= rule.min_iou:
            pairs.append((index, other))
            free.remove(other)
    return pairs


def _get(element: Any, name: str) -> Any:
    return element.get(name, _MISSING) if isinstance(element, Mapping) else _MISSING


def _extent(box: Any) -> tuple[float, float, float, float] | None:
    """``[[x, y], ...]`` or ``[x0, y0, x1, y1]`` -> its axis-aligned (x0, y0, x1, y1)."""
    try:
        if isinstance(box, list) and box and all(isinstance(p, list) and len(p) == 2 for p in box):
            xs = [float(p[0]) for p in box]
            ys = [float(p[1]) for p in box]
            return min(xs), min(ys), max(xs), max(ys)
        if isinstance(box, list) and len(box) == 4:
            x0, y0, x1, y1 = (float(v) for v in box)
            return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)
    except (TypeError, ValueError):
        return None
    return None


def _iou(a: Any, b: Any) -> float:
    first, second = _extent(a), _extent(b)
    if first is None or second is None:
        return 0.0
    width = min(first[2], second[2]) - max(first[0], second[0])
    height = min(first[3], second[3]) - max(first[1], second[1])
    inter = max(width, 0.0) * max(height, 0.0)
    union = _area(first) + _area(second) - inter
    return inter / union if union > 0 else float(first == second)


def _area(extent: tuple[float, float, float, float]) -> float:
    return max(extent[2] - extent[0], 0.0) * max(extent[3] - extent[1], 0.0)


def _abs_error(ref: Any, got: Any) -> float:
    """The largest absolute difference of two numbers or equally shaped (nested) lists; inf otherwise."""
    if isinstance(ref, bool) or isinstance(got, bool):
        return 0.0 if ref == got else math.inf
    if isinstance(ref, int | float) and isinstance(got, int | float):
        error = abs(float(ref) - float(got))
        return error if math.isfinite(error) else math.inf
    if isinstance(ref, list) and isinstance(got, list) and len(ref) == len(got):
        return max((_abs_error(r, g) for r, g in zip(ref, got, strict=True)), default=0.0)
    if isinstance(ref, Mapping) and isinstance(got, Mapping) and set(ref) == set(got):
        return max((_abs_error(ref[k], got[k]) for k in ref), default=0.0)
    return math.inf


def _normal(value: Any) -> Any:
    """A JSON value compared as JSON (tuples are lists, keys unordered)."""
    if value is _MISSING:
        return value
    return json.loads(json.dumps(value, sort_keys=True))


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if value is not _MISSING else "missing"
    return text if len(text) <= limit else text[: limit - 3] + "..."
