"""Decoders side by side: decode + preprocess to the drawing model's tensor on the generator's drawings.

    .venv/bin/python scripts/decode-bench            # full run (make bench-decode): a table, a JSON line
    .venv/bin/python scripts/decode-bench --quick    # under a minute: one drawing per input, 30 held-out

Each decoder runs in a fresh subprocess (so its peak RSS is its own) on the same inputs: PNG and JPEG,
A4 and A3, 150 and 300 dpi. Per decoder and input: CPU ms per drawing (``time.process_time``, the median
of the repeats, so other work on a shared machine does not count), peak RSS, the max absolute difference
from today's Pillow tensor, and, on the held-out drawings (``drawings.HELDOUT_SEED``, the A4/150-dpi
mixed set the training script reports on), class agreement with the Pillow path and accuracy against the
generator's labels through the drawing model (onnxruntime). A decoder whose package is missing is skipped
with the reason. ``inflate:*`` rows time only the inflate of a PNG's IDAT stream, for the profile.
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from worker.dev import drawings
from worker.models.drawing_analyzer import model_spec, preprocessing
from worker.runtime.documents import images

SIZE = model_spec.INPUT_SIZE_PX
MODEL_PATH = Path(__file__).resolve().parents[1] / "models" / "drawing_analyzer" / "model.onnx"
#: (name, pixel size) of the benchmark's sheets, landscape.
SHEETS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("A4-150", (1754, 1240)),
    ("A4-300", (3508, 2480)),
    ("A3-150", (2480, 1754)),
    ("A3-300", (4961, 3508)),
)
FORMATS: tuple[drawings.Format, ...] = ("png", "jpeg")
DECODERS = (
    "pillow",
    "adopted",
    "opencv_reduced",
    "pyvips_thumbnail",
    "imagecodecs",
    "simplejpeg",
    "libdeflate_numba",
    "inflate:zlib",
    "inflate:zlib-ng",
    "inflate:isal",
    "inflate:libdeflate",
)
Decode = Callable[[bytes], "np.ndarray[Any, Any] | None"]


# --- helpers shared by the decoders ------------------------------------------------------------------------
def _target(width: int, height: int) -> tuple[int, int]:
    scale = SIZE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _letterbox(gray: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A uint8 image already reduced to at most SIZE px -> the model tensor (paper padding, ink = 1)."""
    canvas = np.full((SIZE, SIZE), images.PAPER_LEVEL, np.uint8)
    h, w = gray.shape[:2]
    y, x = (SIZE - h) // 2, (SIZE - w) // 2
    canvas[y : y + h, x : x + w] = gray[:SIZE, :SIZE]
    tensor = (images.PAPER_LEVEL - canvas.astype(np.float32)) * np.float32(1.0 / images.PAPER_LEVEL)
    return tensor.reshape(1, SIZE, SIZE)


def _png_idat(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, colour type, concatenated IDAT) of a PNG; raises ValueError on anything else."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    width, height, _, color_type = struct.unpack_from(">IIBB", data, 16)
    pos, parts = 8, []
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        if data[pos + 4 : pos + 8] == b"IDAT":
            parts.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    return width, height, color_type, b"".join(parts)


# --- the decoders (each imports its library, so a missing one is an ImportError) -------------------------
def _pillow() -> Decode:
    return lambda data: preprocessing.image_to_tensor(images.decode_image_pillow(data, size_px=SIZE))


def _adopted() -> Decode:
    return preprocessing.preprocess_bytes


def _opencv_reduced() -> Decode:
    import cv2  # noqa: PLC0415

    flags = {8: cv2.IMREAD_REDUCED_GRAYSCALE_8, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4}
    flags.update({2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 1: cv2.IMREAD_GRAYSCALE})

    def decode(data: bytes) -> np.ndarray[Any, Any]:
        width, height = images._open(data).size  # the header only, as the worker checks it
        factor = next(k for k in (8, 4, 2, 1) if max(width, height) // k >= SIZE)
        gray = cv2.imdecode(np.frombuffer(data, np.uint8), flags[factor])
        if gray is None:
            raise ValueError("cv2.imdecode could not decode the input")
        small = cv2.resize(gray, _target(gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_AREA)
        return _letterbox(small)

    return decode


def _pyvips_thumbnail() -> Decode:
    import pyvips  # noqa: PLC0415  # pyvips-binary bundles libvips

    def decode(data: bytes) -> np.ndarray[Any, Any]:
        thumb = pyvips.Image.thumbnail_buffer(data, SIZE, height=SIZE).colourspace("b-w")
        pixels = np.ndarray((thumb.height, thumb.width, thumb.bands), np.uint8, thumb.write_to_memory())
        return _letterbox(pixels[:, :, 0])

    return decode


def _imagecodecs() -> Decode:
    import imagecodecs  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    def decode(data: bytes) -> np.ndarray[Any, Any]:
        pixels = imagecodecs.png_decode(data) if data[:4] == b"\x89PNG" else imagecodecs.jpeg8_decode(data)
        image = Image.fromarray(pixels)
        return preprocessing.image_to_tensor(image if pixels.ndim == 2 else image.convert("L"))

    return decode


def _simplejpeg() -> Decode:
    import simplejpeg  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    def decode(data: bytes) -> np.ndarray[Any, Any] | None:
        if data[:4] == b"\x89PNG":
            return None
        gray = simplejpeg.decode_jpeg(data, colorspace="GRAY", min_width=SIZE, min_height=SIZE)
        return preprocessing.image_to_tensor(Image.fromarray(gray[:, :, 0]))

    return decode


def _libdeflate_numba() -> Decode:
    import deflate  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    unfilter_gray8 = _numba_unfilter()

    def decode(data: bytes) -> np.ndarray[Any, Any] | None:
        if data[:4] != b"\x89PNG":
            return None
        width, height, color_type, idat = _png_idat(data)
        if color_type != 0:
            return None
        raw = np.frombuffer(deflate.zlib_decompress(idat, height * (width + 1)), np.uint8)
        return preprocessing.image_to_tensor(Image.fromarray(unfilter_gray8(raw, height, width)))

    return decode


def _numba_unfilter() -> Callable[[np.ndarray[Any, Any], int, int], np.ndarray[Any, Any]]:
    """PNG unfiltering of 8-bit gray rows (filters 0-4) compiled by numba (Paeth is sequential: no numpy)."""
    import numba  # noqa: PLC0415

    @numba.njit(nogil=True)  # type: ignore[untyped-decorator, unused-ignore]  # numba may be absent
    def unfilter(raw: np.ndarray[Any, Any], height: int, width: int) -> np.ndarray[Any, Any]:
        out = np.zeros((height + 1, width), np.uint8)  # row 0 is the zero row above the image
        for r in range(height):
            base, kind = r * (width + 1) + 1, raw[r * (width + 1)]
            a, c = 0, 0
            for i in range(width):
                b = int(out[r, i])
                if kind == 1:
                    pred = a
                elif kind == 2:
                    pred = b
                elif kind == 3:
                    pred = (a + b) >> 1
                elif kind == 4:
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                else:
                    pred = 0
                a = (int(raw[base + i]) + pred) & 255
                out[r + 1, i] = a
                c = b
        return out[1:]

    return unfilter  # type: ignore[no-any-return,unused-ignore]  # numba: typed only where installed


def _inflate(name: str) -> Decode:
    inflaters: dict[str, Callable[[bytes, int], bytes | bytearray]] = {
        "zlib": lambda z, n: zlib.decompress(z)
    }
    if name == "zlib-ng":
        from zlib_ng import zlib_ng  # noqa: PLC0415

        inflaters[name] = lambda z, n: zlib_ng.decompress(z)
    elif name == "isal":
        from isal import isal_zlib  # noqa: PLC0415

        inflaters[name] = lambda z, n: isal_zlib.decompress(z)
    elif name == "libdeflate":
        import deflate  # noqa: PLC0415

        inflaters[name] = deflate.zlib_decompress
    inflate = inflaters[name]

    def decode(data: bytes) -> np.ndarray[Any, Any] | None:
        """Inflate a PNG's pixels (an empty array: no tensor); None for anything else."""
        if data[:4] != b"\x89PNG":
            return None
        width, height, color_type, idat = _png_idat(data)
        inflate(idat, height * (width * (3 if color_type == 2 else 1) + 1))
        return np.empty(0, np.float32)

    return decode


def make_decoder(name: str) -> Decode:
    """The decode callable for ``name`` (ImportError when its package is not installed)."""
    if name.startswith("inflate:"):
        return _inflate(name.split(":", 1)[1])
    factories: dict[str, Callable[[], Decode]] = {
        "pillow": _pillow,
        "adopted": _adopted,
        "opencv_reduced": _opencv_reduced,
        "pyvips_thumbnail": _pyvips_thumbnail,
        "imagecodecs": _imagecodecs,
        "simplejpeg": _simplejpeg,
        "libdeflate_numba": _libdeflate_numba,
    }
    return factories[name]()


# --- the child: one decoder, every input ----------------------------------------------------------------
def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would carry the parent's peak across exec on Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_child(name: str, workdir: Path, repeats: int) -> dict[str, Any]:
    """Time ``name`` on every input file, write its tensors; returns ms per input and peak RSS."""
    try:
        decode = make_decoder(name)
        decode((workdir / "inputs" / "A4-150.png.0").read_bytes())  # warm-up (imports, JIT)
    except Exception as exc:  # a missing package, or no wheel for this machine
        return {"decoder": name, "skipped": f"{type(exc).__name__}: {exc}"}
    ms: dict[str, list[float]] = {}
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    for path in sorted((workdir / "inputs").iterdir()):
        data = path.read_bytes()
        key, _, index = path.name.rpartition(".")
        times = []
        for _ in range(repeats):
            started = time.process_time()
            tensor = decode(data)
            times.append(time.process_time() - started)
        if tensor is not None:
            ms.setdefault(key, []).append(float(np.median(times)) * 1000)
        if tensor is not None and tensor.size:
            tensors[f"{key}.{index}"] = tensor
    heldout = [decode(p.read_bytes()) for p in sorted((workdir / "heldout").iterdir())]
    if heldout and all(t is not None and t.size for t in heldout):
        tensors["heldout"] = np.stack([t for t in heldout if t is not None])
    np.savez(workdir / f"{name.replace(':', '_')}.npz", **tensors)  # type: ignore[arg-type]
    return {
        "decoder": name,
        "ms": {key: round(float(np.median(v)), 2) for key, v in ms.items()},
        "peak_rss_mb": _peak_rss_mb(),
    }


# --- the parent: inputs, one child per decoder, agreement through the model ------------------------------
def write_inputs(workdir: Path, *, per_input: int, heldout: int) -> dict[str, int]:
    """Render the benchmark inputs and the held-out set into ``workdir``; returns bytes per input."""
    (workdir / "inputs").mkdir()
    (workdir / "heldout").mkdir()
    sizes: dict[str, int] = {}
    for sheet, size in SHEETS:
        for fmt in FORMATS:
            for index in range(per_input):
                seed = drawings.dataset_seed(index, seed=drawings.HELDOUT_SEED)
                data, _ = drawings.render_drawing(seed, size=size, fmt=fmt)
                (workdir / "inputs" / f"{sheet}.{fmt}.{index}").write_bytes(data)
                sizes[f"{sheet}.{fmt}"] = len(data)
    labels = []
    for index, (data, label) in enumerate(drawings.dataset(heldout, seed=drawings.HELDOUT_SEED, fmt="mixed")):
        (workdir / "heldout" / f"{index:04d}").write_bytes(data)
        labels.append(model_spec.CLASS_NAMES.index(label))
    np.save(workdir / "labels.npy", np.array(labels))
    return sizes


def _classes(tensors: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    import onnxruntime  # noqa: PLC0415

    session = onnxruntime.InferenceSession(str(MODEL_PATH), providers=["CPUExecutionProvider"])
    probs = np.concatenate(
        [
            session.run(["CLASS_PROBS"], {model_spec.INPUT.name: tensors[i : i + 32]})[0]
            for i in range(0, len(tensors), 32)
        ]
    )
    return np.asarray(probs.argmax(axis=1))


def compare(workdir: Path, rows: list[dict[str, Any]]) -> None:
    """Add max |diff| vs the Pillow tensors, class agreement and accuracy on the held-out set to ``rows``."""
    reference = dict(np.load(workdir / "pillow.npz"))
    labels = np.load(workdir / "labels.npy")
    reference_classes = _classes(reference["heldout"])
    for row in rows:
        path = workdir / f"{row['decoder'].replace(':', '_')}.npz"
        if "skipped" in row or not path.exists():
            continue
        tensors = dict(np.load(path))
        diffs = [float(np.abs(t - reference[k]).max()) for k, t in tensors.items() if k != "heldout"]
        row["max_abs_diff"] = round(max(diffs), 4) if diffs else None
        if "heldout" in tensors:
            classes = reference_classes if row["decoder"] == "pillow" else _classes(tensors["heldout"])
            row["heldout_agreement"] = round(float(np.mean(classes == reference_classes)), 4)
            row["heldout_accuracy"] = round(float(np.mean(classes == labels)), 4)


def _table(rows: list[dict[str, Any]], sizes: dict[str, int]) -> str:
    keys = list(sizes)
    head = f"{'decoder':18s}" + "".join(f"{k:>14s}" for k in keys) + "  rss_MB  max|d|  agree  acc"
    lines = [head, f"{'(input KB)':18s}" + "".join(f"{sizes[k] // 1024:>14d}" for k in keys)]
    for row in rows:
        if "skipped" in row:
            lines.append(f"{row['decoder']:18s} skipped: {row['skipped']}")
            continue
        cells = "".join(f"{row['ms'].get(k, float('nan')):>14.2f}" for k in keys)
        extra = [
            row.get("peak_rss_mb"),
            row.get("max_abs_diff"),
            row.get("heldout_agreement"),
            row.get("heldout_accuracy"),
        ]
        lines.append(f"{row['decoder']:18s}{cells}" + "".join(f"  {'-' if v is None else v}" for v in extra))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one drawing per input, 30 held-out, 3 repeats")
    parser.add_argument("--decoders", default=",".join(DECODERS), help="comma-separated subset")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=0, help="timed decodes per drawing (default 3/9)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)
    if args.child:
        print(json.dumps(run_child(args.child, args.workdir, repeats)))
        return 0
    with tempfile.TemporaryDirectory(prefix="decode-bench-") as tmp:
        workdir = Path(tmp)
        sizes = write_inputs(workdir, per_input=1 if args.quick else 3, heldout=30 if args.quick else 120)
        rows = []
        for name in args.decoders.split(","):
            command = [sys.executable, "-m", "worker.dev.decode_bench", "--child", name]
            command += ["--workdir", str(workdir), "--repeats", str(repeats)]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            last = (result.stdout.strip().splitlines() or [""])[-1]
            rows.append(
                json.loads(last)
                if result.returncode == 0 and last.startswith("{")
                else {"decoder": name, "skipped": f"exit {result.returncode}: {result.stderr.strip()[-300:]}"}
            )
        compare(workdir, rows)
    print(_table(rows, sizes))
    print(json.dumps({"decode_bench": rows, "input_bytes": sizes, "repeats": repeats, "quick": args.quick}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
