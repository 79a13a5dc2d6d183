"""The package format for free sizes: bounds and buckets in model.toml, fan-out items and their context,
any tensor name, the generated Triton configs and the TensorRT profile (pure logic and the loader; the
real tritonserver is test_free_sizes_on_triton.py)."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from worker.runtime.model_packages import engine_build, handlers, items, onnx_tools, triton_repository
from worker.runtime.model_packages.declaration import Declaration, PackageInvalid, read_declaration
from worker.runtime.model_packages.items import Prepared
from worker.runtime.model_packages.loader import load_package
from worker.shared import errors

from . import shaped
from .tiny import declaration as tiny_declaration
from .tiny import write_package


def reader(tmp_path: Path, toml: str = shaped.READER_TOML) -> Declaration:
    return read_declaration(shaped.write_reader(tmp_path, toml=toml))


def detector(tmp_path: Path, toml: str = shaped.DETECTOR_TOML) -> Declaration:
    return read_declaration(shaped.write_detector(tmp_path, toml=toml))


def test_a_free_size_package_declares_bounds_buckets_fan_out_and_odd_tensor_names(tmp_path: Path) -> None:
    # Given the OCR-shaped chain written in the test (names with "/", "." and ":")
    shaped.write_chain(tmp_path)
    det = load_package(tmp_path / "detector")
    read = load_package(tmp_path / "reader")
    # Then the declarations carry the bounds (opt defaulting to max when absent), buckets, fan-out
    (image,) = det.declaration.inputs
    assert image.name == "image/x.0" and image.shape == (1, -1, -1) and image.free
    assert image.bounds is not None and image.bounds.min == (1, 8, 8) and image.bounds.max == (1, 256, 256)
    assert [t.name for t in det.declaration.outputs] == ["map/sigmoid:0", "stats.pool"]
    (crop,) = read.declaration.inputs
    assert crop.buckets == ((1, 8, 16), (1, 8, 32), (1, 8, 64)) and crop.pad_value == 0.0
    assert read.declaration.max_items == 8 and read.declaration.fan_out and not det.declaration.fan_out
    # and the graph check accepts the free dims the graph leaves free
    onnx_tools.check_graph(det)
    onnx_tools.check_graph(read)
    # and an existing fixed-shape package is unchanged: its bounds are its shape, no fan-out, raw parity
    tiny = load_package(write_package(tmp_path / "t"))
    assert tiny.declaration.inputs[0].bounds is not None and tiny.declaration.inputs[0].bounds.opt == (4,)
    assert tiny.declaration.max_items is None and tiny.declaration.parity.answers is None
    assert tiny.declaration.parity.max_abs_error == 0.01


BOUNDS = "min_shape = [1, 8, 1]\nopt_shape = [1, 8, 32]\nmax_shape = [1, 8, 128]\n"


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        (BOUNDS, "", "has free dims: declare min_shape and max_shape"),
        ("min_shape = [1, 8, 1]", "min_shape = [1, 8, 64]", "min_shape <= opt_shape <= max_shape"),
        ("max_shape = [1, 8, 128]", "max_shape = [1, 9, 128]", "the fixed sizes of shape [1, 8, -1]"),
        ("[1, 8, 64]]", "[1, 8, 256]]", "buckets[2] [1, 8, 256] is outside"),
        ("[[1, 8, 16], [1, 8, 32]", "[[1, 8, 32], [1, 8, 16]", "buckets must grow"),
        ("[[1, 8, 16], [1, 8, 32]", "[[1, 8, 16], [1, 8, 16]", "buckets must grow"),
        ("max_items = 8", "max_items = 0", "fan_out.max_items must be an integer"),
        ('name = "crop"', 'name = "crop,1"', "inputs[0].name must be"),
        ('name = "crop"', 'name = "crop\'1"', "inputs[0].name must be"),
        ('name = "crop"', 'name = "crop 1"', "inputs[0].name must be"),
        ("shape = [-1]\n\n[[analyses]]", "shape = [-1]\nbuckets = [[4]]\n\n[[analyses]]", "are an input's"),
        ("[parity]\n", "[parity]\nmax_abs_error = 0.1\n", "judge raw tensors or answers, not both"),
        ("[parity.answers.text]\n", "[parity.answers.other]\n", "not analyses of this package"),
        ('match = "box", min_iou = 0.99', 'match = "near"', "match must be one of order, box"),
        ("min_iou = 0.99", "min_iou = 1.5", "min_iou must be in (0, 1]"),
    ],
)
def test_a_bad_free_size_declaration_is_refused_naming_the_field(
    tmp_path: Path, old: str, new: str, problem: str
) -> None:
    toml = shaped.READER_TOML
    assert old in toml
    with pytest.raises(PackageInvalid) as refused:
        reader(tmp_path, toml.replace(old, new, 1))
    assert refused.value.package == "reader" and problem in str(refused.value), str(refused.value)


def test_fixed_inputs_take_no_bounds_and_pad_value_needs_buckets(tmp_path: Path) -> None:
    fixed = tiny_declaration().replace("shape = [4]", "shape = [4]\nmax_shape = [4]", 1)
    with pytest.raises(PackageInvalid, match="declares \\['max_shape'\\] but its shape has no -1 dim"):
        read_declaration(write_package(tmp_path / "a", toml=fixed))
    unbucketed = shaped.READER_TOML.replace("buckets = [[1, 8, 16], [1, 8, 32], [1, 8, 64]]\n", "")
    with pytest.raises(PackageInvalid, match="pad_value needs buckets"):
        reader(tmp_path / "b", unbucketed)


def test_bucketed_inputs_must_declare_as_many_buckets_each(tmp_path: Path) -> None:
    second = (
        '[[inputs]]\nname = "mask"\ndtype = "FP32"\nshape = [-1]\nmin_shape = [1]\nmax_shape = [64]\n'
        "buckets = [[16], [64]]\n\n[[outputs]]"
    )
    with pytest.raises(PackageInvalid, match="inputs with buckets must declare as many each"):
        reader(tmp_path, shaped.READER_TOML.replace("[[outputs]]", second, 1))


def crop(width: int, value: float = 1.0) -> dict[str, np.ndarray[Any, Any]]:
    return {"crop": np.full((1, 8, width), value, dtype=np.float32)}


def test_an_item_goes_to_the_smallest_bucket_that_holds_it_and_is_padded_at_the_end(tmp_path: Path) -> None:
    (tensor,) = reader(tmp_path).inputs
    assert items.bucket_for(tensor, (1, 8, 16)) == (1, 8, 16)
    assert items.bucket_for(tensor, (1, 8, 17)) == (1, 8, 32)
    assert items.bucket_for(tensor, (1, 8, 65)) is None  # larger than every bucket: goes as it is
    padded = items.pad_item((tensor,), crop(20))["crop"]
    assert padded.shape == (1, 8, 32)
    assert np.all(padded[..., :20] == 1.0) and np.all(padded[..., 20:] == 0.0)
    assert items.pad_item((tensor,), crop(100))["crop"].shape == (1, 8, 100)
    # what may share a batch: equal padded shapes and dtypes
    sign = items.batch_signature
    assert sign(items.pad_item((tensor,), crop(20))) == sign(items.pad_item((tensor,), crop(31)))
    assert sign(items.pad_item((tensor,), crop(20))) != sign(items.pad_item((tensor,), crop(33)))
    assert sign(crop(20)) != sign({"crop": crop(20)["crop"].astype(np.float16)})
    # one shape holding several items: the smallest bucket holding them all, else their largest sizes
    assert items.common_shapes((tensor,), [crop(5), crop(30)]) == {"crop": (1, 8, 32)}
    assert items.common_shapes((tensor,), [crop(5), crop(90)]) == {"crop": (1, 8, 90)}


def test_the_bucket_index_chooses_every_bucketed_input_together(tmp_path: Path) -> None:
    second = (
        '[[inputs]]\nname = "mask"\ndtype = "FP32"\nshape = [-1]\nmin_shape = [1]\nmax_shape = [128]\n'
        "buckets = [[4], [8], [64]]\npad_value = -1.0\n\n[[outputs]]"
    )
    inputs = reader(tmp_path, shaped.READER_TOML.replace("[[outputs]]", second, 1)).inputs
    item = {**crop(10), "mask": np.zeros(7, dtype=np.float32)}
    # the crop fits bucket 0 but the mask needs bucket 1: both go to bucket 1
    assert items.bucket_index(inputs, item) == 1
    padded = items.pad_item(inputs, item)
    assert padded["crop"].shape == (1, 8, 32) and padded["mask"].shape == (8,) and padded["mask"][-1] == -1.0


def test_preprocess_results_are_checked_into_items_with_their_context(tmp_path: Path) -> None:
    d = reader(tmp_path)
    # a Prepared of K items (K may be 0) and a context; the original shapes are recorded
    page = items.check_prepared(d, Prepared([crop(20), crop(70)], context={"boxes": [1, 2]}))
    assert len(page.items) == 2 and page.context == {"boxes": [1, 2]}
    assert page.shapes() == [{"crop": [1, 8, 20]}, {"crop": [1, 8, 70]}]
    assert items.check_prepared(d, Prepared([])).items == ()
    # one dict is one item without context, as before
    assert len(items.check_prepared(d, crop(3)).items) == 1
    # postprocess gets the list of outputs and the context and item shapes in params
    params = items.postprocess_params(d, {"page": 1}, page)
    assert params["context"] == {"boxes": [1, 2]} and params["item_shapes"][1] == {"crop": [1, 8, 70]}
    rows = [{"columns": np.zeros(32)}, {"columns": np.zeros(70)}]
    assert items.postprocess_outputs(d, rows) == rows


def test_too_many_items_and_out_of_bounds_sizes_get_their_codes_naming_package_and_limits(
    tmp_path: Path,
) -> None:
    d = reader(tmp_path)
    with pytest.raises(errors.TooManyItems) as many:
        items.check_prepared(d, Prepared([crop(10)] * 9))
    assert many.value.code == "TOO_MANY_ITEMS"
    assert str(many.value) == "reader: preprocess returned 9 items for one page; [fan_out] max_items is 8"
    with pytest.raises(errors.TensorOutOfBounds) as wide:
        items.check_prepared(d, Prepared([crop(10), crop(129)]))
    assert wide.value.code == "TENSOR_OUT_OF_BOUNDS"
    assert str(wide.value) == (
        "reader: input crop has shape [1, 8, 129], outside its bounds [1, 8, 1] .. [1, 8, 128] (item 2 of 2)"
    )
    assert (
        isinstance(wide.value, errors.PermanentError) and errors.TensorOutOfBounds in errors.PERMANENT_ERRORS
    )
    assert errors.TooManyItems in errors.PERMANENT_ERRORS
    # a fixed dim that differs is the handler's mistake, not a bound
    with pytest.raises(
        errors.ModelPreprocessFailed, match="has shape \\[1, 9, 10\\], declared \\[1, 8, -1\\]"
    ):
        items.check_prepared(d, {"crop": np.zeros((1, 9, 10), dtype=np.float32)})


def test_a_package_without_fan_out_returns_one_item_and_a_context_must_pickle(tmp_path: Path) -> None:
    d = detector(tmp_path)
    image = {"image/x.0": np.zeros((1, 16, 16), dtype=np.float32)}
    assert items.check_prepared(d, Prepared([image], context=(3, 4))).context == (3, 4)
    with pytest.raises(errors.ModelPreprocessFailed, match="returned 2 items; without \\[fan_out\\] a page"):
        items.check_prepared(d, Prepared([image, image]))
    with pytest.raises(errors.ModelPreprocessFailed, match="the context does not pickle"):
        items.check_prepared(d, Prepared([image], context=threading.Lock()))
    with pytest.raises(errors.TensorOutOfBounds, match=r"input image/x\.0 has shape \[1, 4, 16\]"):
        items.check_prepared(d, {"image/x.0": np.zeros((1, 4, 16), dtype=np.float32)})
    # postprocess of a package without fan-out gets one dict and the one item's shapes
    page = items.check_prepared(d, Prepared([image], context="c"))
    assert items.postprocess_params(d, {}, page)["item_shapes"] == {"image/x.0": [1, 16, 16]}
    assert pickle.loads(pickle.dumps(page)).context == "c"


def test_the_triton_configs_of_free_sizes_have_free_dims_and_concrete_warm_ups(tmp_path: Path) -> None:
    read, det = reader(tmp_path / "r"), detector(tmp_path / "d")
    cpu = triton_repository.config_pbtxt(read, "cpu")
    assert 'name: "crop"\n    data_type: TYPE_FP32\n    dims: [ 1, 8, -1 ]' in cpu
    assert 'name: "columns"\n    data_type: TYPE_FP32\n    dims: [ -1 ]' in cpu
    # one warm-up per bucket at batch 1 on CPU, never a -1 dim in a warm-up (tritonserver refuses it)
    warmups = cpu[cpu.index("model_warmup") :]
    assert warmups.count("batch_size: 1\n") == 3 and "-1" not in warmups
    assert all(f"dims: [ 1, 8, {w} ]" in warmups for w in (16, 32, 64))
    # free inputs without buckets warm up once at their opt shape; on GPU at the preferred batch
    gpu = triton_repository.config_pbtxt(det, "gpu")
    assert 'name: "image/x.0"' in gpu and "dims: [ 1, -1, -1 ]" in gpu
    gpu_warmups = gpu[gpu.index("model_warmup") :]
    assert gpu_warmups.count("batch_size: 2\n") == 1 and "dims: [ 1, 48, 64 ]" in gpu_warmups
    assert triton_repository.warmup_shapes(det.inputs) == [{"image/x.0": (1, 48, 64)}]


def test_engine_plan_prints_one_profile_from_the_bounds_with_names_trtexec_reads(tmp_path: Path) -> None:
    shaped.write_chain(tmp_path / "models")
    write_package(tmp_path / "models")  # tiny, fixed shapes: its line is as before
    lines = engine_build.plan_lines(tmp_path / "models", "nvidia-l4.sm89.trt10.3")
    by_name = {line.split("\t")[0]: line.split("\t") for line in lines}
    assert len(by_name["detector"]) == 7
    assert by_name["detector"][4:] == [
        "'image/x.0':1x1x8x8",
        "'image/x.0':2x1x48x64",
        "'image/x.0':4x1x256x256",
    ]
    assert by_name["reader"][4:] == ["crop:1x1x8x1", "crop:4x1x8x32", "crop:8x1x8x128"]
    assert by_name["tiny"][4:] == ["FEATURES:1x4", "FEATURES:4x4", "FEATURES:8x4"]
    assert by_name["detector"][3].startswith("detector/") and by_name["detector"][3].endswith(".trt10.3.plan")


def test_trtexec_reads_a_quoted_name_whole_and_a_plain_one_up_to_the_last_colon() -> None:
    """trtexec's rule (samples/common/sampleOptions.cpp, splitNameAndValue): with single quotes the name
    is what they hold; else everything before the last ':'. A mirror of it reads our specs back."""

    def trtexec_reads(spec: str) -> list[tuple[str, str]]:
        pairs = []
        for part in spec.split(","):
            quoted = part.split("'")
            if len(quoted) == 3:
                pairs.append((quoted[0] + quoted[1], quoted[2][1:]))
            else:
                name, _, value = part.rpartition(":")
                pairs.append((name, value))
        return pairs

    names = ["x", "save_infer_model/scale_0.tmp_1", "input_1:0", "a.b-c"]
    spec = ",".join(f"{engine_build.spec_name(n)}:1x3" for n in names)
    assert trtexec_reads(spec) == [(n, "1x3") for n in names]
    assert engine_build.spec_name("FEATURES") == "FEATURES"


def test_the_graph_check_refuses_a_free_dim_the_graph_fixes(tmp_path: Path) -> None:
    toml = tiny_declaration().replace("shape = [4]", "shape = [-1]\nmin_shape = [1]\nmax_shape = [8]", 1)
    package = load_package(write_package(tmp_path, toml=toml))
    with pytest.raises(
        PackageInvalid, match="input FEATURES: declared shape \\[-1\\] has a free dim the graph"
    ):
        onnx_tools.check_graph(package)


def test_the_workers_preprocess_checks_bounds_and_pads_items_to_their_buckets_in_the_pool(
    tmp_path: Path,
) -> None:
    # Given the detector returning a plain dict (one item, no context) and the chain's fan-out reader
    handler = shaped.DETECTOR_HANDLER.replace(
        'return Prepared([{"image/x.0": render(spec)}], context={"boxes": spec["boxes"]})',
        'return {"image/x.0": render(spec)}',
    )
    folder = shaped.write_detector(tmp_path, handler=handler)
    reader = shaped.write_reader(tmp_path / "r")
    page = b'{"width": 64, "height": 40, "boxes": [[4, 4, 20, 12], [10, 20, 40, 28], [0, 30, 60, 38]]}'
    # When the worker's pool function preprocesses a page within the bounds, and one below them
    done = handlers.run_preprocess(str(folder), page, {})
    assert [item["image/x.0"].shape for item in done.page.items] == [(1, 40, 64)]
    assert done.page.context is None and done.measure is None and done.frame is None  # JSON: no page
    with pytest.raises(errors.TensorOutOfBounds, match=r"detector: input image/x\.0 has shape \[1, 4, 64\]"):
        handlers.run_preprocess(str(folder), page.replace(b'"height": 40', b'"height": 4'), {})
    # Then a fan-out's crops come back padded to their buckets (16, 32, 64), the pad the bucket's, with
    # their widths before the pad and the context
    regions = {"boxes": [{"box": [4, 4, 20, 12]}, {"box": [10, 20, 40, 28]}, {"box": [0, 30, 60, 38]}]}
    crops = handlers.run_preprocess(str(reader), page, {"needs": {"regions": regions}}).page
    assert [item["crop"].shape for item in crops.items] == [(1, 8, 16), (1, 8, 32), (1, 8, 64)]
    assert [shapes["crop"] for shapes in crops.shapes()] == [[1, 8, 16], [1, 8, 30], [1, 8, 60]]
    assert float(crops.items[2]["crop"][..., 60:].sum()) == 0.0 and crops.items[2]["crop"].sum() == 8 * 60
    assert crops.context == [[4, 4, 20, 12], [10, 20, 40, 28], [0, 30, 60, 38]]
    # and a page past max_items is refused by name, never truncated
    many = {"boxes": [{"box": [0, 0, 4, 8]}] * 9}
    with pytest.raises(errors.TooManyItems, match=r"reader: preprocess returned 9 items .* max_items is 8"):
        handlers.run_preprocess(str(reader), page, {"needs": {"regions": many}})
