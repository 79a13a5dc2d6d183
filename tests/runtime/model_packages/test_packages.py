"""Model packages: the declaration, the loader's refusals (package named), the needs graph, the generated
Triton configs, and the parity gate on CPU (onnxruntime, an FP16-converted graph)."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from worker.runtime.model_packages import handlers, onnx_tools, parity, triton_repository
from worker.runtime.model_packages.declaration import PackageInvalid
from worker.runtime.model_packages.loader import load_package, load_packages

from . import free_size
from .tiny import HANDLER, declaration, write_package


def test_a_package_written_here_loads_and_runs_through_its_graph(tmp_path: Path) -> None:
    # Given a package made in the test (tiny ONNX + a few lines of pre/postprocess)
    folder = write_package(tmp_path)
    # When it is loaded and checked against its graph
    package = load_package(folder)
    onnx_tools.check_graph(package)
    # then its preprocess, the graph and its postprocess give one job's JSON-able answer
    tensors = package.preprocess(b"[1, 2, 3, 4]", {"scale": 2.0})
    assert tensors["FEATURES"].shape == (4,) and tensors["FEATURES"][3] == 8.0
    (outputs,) = onnx_tools.run_graph(package.model_path, package.declaration, [tensors])
    answer = package.postprocess(outputs, {})
    assert answer["tiny_score"]["label"] in ("low", "mid", "high")
    assert abs(sum(answer["tiny_score"]["scores"]) - 1.0) < 1e-5
    assert len(package.model_digest) == 64 and len(package.reference_inputs()) == 2


@pytest.mark.parametrize(
    ("handler", "toml", "problem"),
    [
        ("def preprocess(data, params):\n    return {}\n", None, "no postprocess() function"),
        (HANDLER + "\npostprocess = 3\n", None, "no postprocess() function"),
        (
            "def preprocess(data):\n    return {}\ndef postprocess(o, p):\n    return {}\n",
            None,
            "two arguments",
        ),
        ("raise RuntimeError('boom')\n", None, "importing handler.py failed: RuntimeError: boom"),
        (HANDLER, declaration().replace('dtype = "FP32"', 'dtype = "FP33"', 1), "inputs[0].dtype"),
        (HANDLER, declaration().replace('outputs = ["SCORES"]', 'outputs = ["NOPE"]'), "undeclared outputs"),
        (HANDLER, declaration().replace("[parity]\nmax_abs_error = 0.01", "[parity]"), "max_abs_error"),
        (HANDLER, declaration().replace("reference/*.json", "missing/*.json"), "match no file"),
        (HANDLER, declaration().replace('name = "tiny"', 'name = "Tiny Model"'), "model.name"),
        (HANDLER, "this is = not toml [", "does not parse"),
    ],
)
def test_a_bad_package_is_refused_with_its_name_and_the_problem(
    tmp_path: Path, handler: str, toml: str | None, problem: str
) -> None:
    folder = write_package(tmp_path, handler=handler, toml=toml)
    with pytest.raises(PackageInvalid) as refused:
        load_package(folder)
    assert refused.value.package == "tiny" and problem in str(refused.value), str(refused.value)


def test_tensors_that_do_not_match_the_graph_are_refused(tmp_path: Path) -> None:
    toml = declaration().replace('name = "SCORES"', 'name = "PROBS"').replace('["SCORES"]', '["PROBS"]')
    package = load_package(write_package(tmp_path, toml=toml))
    with pytest.raises(
        PackageInvalid, match=r"declared outputs \['PROBS'\] but the ONNX graph has \['SCORES'\]"
    ):
        onnx_tools.check_graph(package)
    shaped = load_package(
        write_package(tmp_path / "b", toml=declaration().replace("shape = [4]", "shape = [5]"))
    )
    with pytest.raises(PackageInvalid, match="declared shape"):
        onnx_tools.check_graph(shaped)


def analyses(*entries: tuple[str, list[str]]) -> str:
    return "".join(
        f'[[analyses]]\nname = "{name}"\noutputs = ["SCORES"]\nneeds = {needs!r}\n\n'.replace("'", '"')
        for name, needs in entries
    )


def test_two_packages_claiming_one_analysis_are_refused(tmp_path: Path) -> None:
    write_package(tmp_path, "one", toml=declaration("one", analyses(("shared", []))))
    write_package(tmp_path, "two", toml=declaration("two", analyses(("shared", []))))
    with pytest.raises(PackageInvalid, match="analysis 'shared' is also claimed by package 'one'") as refused:
        load_packages(tmp_path)
    assert refused.value.package == "two"


def test_a_cycle_in_needs_is_refused_naming_it(tmp_path: Path) -> None:
    write_package(tmp_path, "one", toml=declaration("one", analyses(("a", ["b"]))))
    write_package(tmp_path, "two", toml=declaration("two", analyses(("b", ["c"]), ("c", ["a"]))))
    with pytest.raises(PackageInvalid, match="needs form a cycle: a -> b -> c -> a"):
        load_packages(tmp_path)


def test_a_need_that_no_package_offers_is_refused(tmp_path: Path) -> None:
    write_package(tmp_path, "one", toml=declaration("one", analyses(("a", ["ocr"]))))
    with pytest.raises(PackageInvalid, match="needs 'ocr', which no package offers"):
        load_packages(tmp_path)


def test_needs_order_the_model_calls(tmp_path: Path) -> None:
    # Given symbols needs classify (another package), and summary needs both
    write_package(tmp_path, "drawing", toml=declaration("drawing", analyses(("classify", []), ("embed", []))))
    write_package(tmp_path, "symbols", toml=declaration("symbols", analyses(("symbols", ["classify"]))))
    write_package(
        tmp_path, "report", toml=declaration("report", analyses(("summary", ["symbols", "classify"])))
    )
    catalog = load_packages(tmp_path)
    # When a job asks for the summary only, then what it needs runs first, one call per package and level
    steps = catalog.plan(["summary"])
    assert [(s.package.name, s.analyses) for s in steps] == [
        ("drawing", ("classify",)),
        ("symbols", ("symbols",)),
        ("report", ("summary",)),
    ]
    # and analyses of one package share a call
    assert [(s.package.name, s.analyses) for s in catalog.plan(["embed", "classify"])] == [
        ("drawing", ("classify", "embed"))
    ]
    with pytest.raises(KeyError):
        catalog.plan(["ocr"])


#: A handler that keeps its numbers in a module of its own, next to it (as a package of several modules does).
SIBLING_HANDLER = textwrap.dedent(
    """
    import json
    import numpy as np

    from . import scaling

    def preprocess(data, params):
        return {"FEATURES": np.asarray(json.loads(data), dtype=np.float32) * scaling.FACTOR}

    def postprocess(outputs, params):
        return {"tiny_score": {"factor": scaling.FACTOR}}
    """
)


def _sibling_package(root: Path, factor: float) -> Path:
    folder = write_package(root, handler=SIBLING_HANDLER)
    (folder / "scaling.py").write_text(f"FACTOR = {factor}\n", encoding="utf-8")
    return folder


def test_a_handler_imports_the_modules_next_to_it_here_and_in_a_spawned_pool_process(tmp_path: Path) -> None:
    # Given a package whose handler imports a sibling module relatively
    folder = _sibling_package(tmp_path / "one", 2.0)
    # When it is loaded, then the handler is a module of a package made for this model package
    package = load_package(folder)
    assert package.preprocess(b"[1, 2, 3, 4]", {})["FEATURES"].tolist() == [2.0, 4.0, 6.0, 8.0]
    assert package.preprocess.__module__ == "fleet_model_package_tiny.handler"
    assert sys.modules["fleet_model_package_tiny"].__path__ == [str(folder)]
    # and a spawned process (as the worker's preprocess pool) imports it again from the folder
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        done = pool.submit(handlers.run_preprocess, str(folder), b"[1, 1, 1, 1]", {}).result(timeout=120)
    assert done.page.items[0]["FEATURES"].tolist() == [2.0, 2.0, 2.0, 2.0]


def test_a_second_package_of_the_same_name_gets_its_own_modules(tmp_path: Path) -> None:
    # Given two folders holding a package of one name, whose sibling modules differ
    first = load_package(_sibling_package(tmp_path / "one", 2.0))
    # When the second is loaded after the first
    second = load_package(_sibling_package(tmp_path / "two", 3.0))
    # Then each runs with its own sibling module, the second not served the first's from sys.modules
    assert second.postprocess({}, {}) == {"tiny_score": {"factor": 3.0}}
    assert first.postprocess({}, {}) == {"tiny_score": {"factor": 2.0}}


def test_the_generated_triton_configs_follow_the_declaration(tmp_path: Path) -> None:
    package = load_package(write_package(tmp_path / "p"))
    cpu = triton_repository.config_pbtxt(package.declaration, "cpu")
    gpu = triton_repository.config_pbtxt(package.declaration, "gpu")
    for text in (cpu, gpu):
        assert 'name: "tiny"' in text and "max_batch_size: 8" in text and "dynamic_batching" not in text
        assert 'name: "FEATURES"\n    data_type: TYPE_FP32\n    dims: [ 4 ]' in text
        assert 'name: "SCORES"\n    data_type: TYPE_FP32\n    dims: [ 3 ]' in text
    assert 'backend: "python"' in cpu and "KIND_CPU" in cpu and "batch_size: 4" not in cpu
    assert (
        'platform: "tensorrt_plan"' in gpu
        and "KIND_GPU" in gpu
        and 'default_model_filename: "model.plan"' in gpu
    )
    # and the CPU repository holds the graph and the python model next to its config
    (folder,) = triton_repository.write_repository([package], tmp_path / "repo", "cpu")
    assert (folder / "1" / "model.onnx").read_bytes() == package.model_path.read_bytes()
    assert (folder / "1" / "model.py").is_file() and (folder / "config.pbtxt").read_text() == cpu
    assert "model_warmup" in cpu and "batch_size: 8" in cpu


def test_a_package_of_free_size_warms_up_at_a_size_it_declares(tmp_path: Path) -> None:
    # Given a package whose input is the page itself: free height and width, bounded by the declaration
    package = load_package(free_size.write_package(tmp_path))
    assert package.declaration.inputs[0].shape == (1, -1, -1)
    # Then both configs keep the dims free and warm up at the declared opt_shape (default: max_shape),
    # never with -1 dims, which Triton refuses ('warmup setting expects all variable-size dimensions')
    side = free_size.SIDE_PX
    for variant in ("cpu", "gpu"):
        text = triton_repository.config_pbtxt(package.declaration, variant)
        assert "dims: [ 1, -1, -1 ]" in text
        assert text.count("model_warmup") == 1 and f"dims: [ 1, {side}, {side} ]" in text


def gate(tmp_path: Path, tolerance: float) -> parity.PrecisionDecision:
    """The parity gate on CPU: FP32 graph = reference; candidates FP16 (converted graph) and FP32."""
    package = load_package(write_package(tmp_path))
    examples = onnx_tools.reference_examples(package)
    graphs = {
        "FP32": package.model_path,
        "FP16": onnx_tools.fp16_graph(package.model_path, tmp_path / "model.fp16.onnx"),
    }
    reference = parity.StageRun(onnx_tools.run_graph(package.model_path, package.declaration, examples))
    ran: list[str] = []

    def run(precision: str) -> parity.StageRun:
        ran.append(precision)
        return parity.StageRun(onnx_tools.run_graph(graphs[precision], package.declaration, examples))

    decision = parity.choose_precision(("FP16", "FP32"), reference=reference, run=run, tolerance=tolerance)
    assert ran == [c.precision for c in decision.measured]
    return decision


def test_an_fp16_candidate_outside_tolerance_is_rejected_and_fp32_chosen(tmp_path: Path) -> None:
    decision = gate(tmp_path, tolerance=1e-6)
    assert decision.chosen == "FP32" and decision.rejected == ("FP16",)
    fp16, fp32 = decision.measured
    assert fp16.worst > 1e-6 and fp32.worst == 0.0
    # and the decision is recorded with every measured error
    record = decision.provenance()
    assert record["precision"] == "FP32" and record["rejected"] == ["FP16"]
    assert record["measured"][0]["max_abs_error"]["SCORES"] == fp16.worst


def test_an_fp16_candidate_within_tolerance_is_chosen_without_trying_fp32(tmp_path: Path) -> None:
    decision = gate(tmp_path, tolerance=0.05)
    assert decision.chosen == "FP16" and decision.rejected == () and len(decision.measured) == 1
    assert 0 < decision.measured[0].worst <= 0.05


def test_no_precision_within_tolerance_fails_loudly() -> None:
    reference = [{"Y": np.array([1.0, 2.0])}]
    with pytest.raises(parity.NoPrecisionWithinTolerance, match=r"FP16 0\.5, FP32 0\.5"):
        parity.choose_precision(
            ["FP16", "FP32"],
            reference=parity.StageRun(reference),
            run=lambda _p: parity.StageRun([{"Y": np.array([1.5, 2.0])}]),
            tolerance=0.1,
        )
    with pytest.raises(ValueError, match="shape"):
        parity.max_abs_errors(reference, [{"Y": np.array([1.0])}])
