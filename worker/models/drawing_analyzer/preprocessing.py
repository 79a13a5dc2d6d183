"""The drawing analyzer's input: image bytes or a decoded page -> ``[1, 192, 192]`` FP32, or a typed error.

Decode (``worker.runtime.documents.images``: the byte and pixel bounds, the format allow-list, first frame,
EXIF orientation, grayscale with alpha composited onto white paper) -> letterbox into ``INPUT_SIZE_PX``
square (aspect kept, centred, padded with paper) -> ink = 1.0, paper = 0.0, shape ``model_spec.INPUT.shape``.

The handler (in the worker's preprocess pool), ``scripts/train_model.py`` and ``scripts/parity_check.py``
all call ``preprocess_bytes`` / ``image_to_tensor`` from here, so the model never sees pixels prepared
another way. Preprocessing runs in the worker's CPU pool rather than in a Triton ensemble: the input is
an encoded image of up to tens of MB, and decoding it on the GPU VM's CPU next to the fetch keeps
Triton's requests small (147 KB per image) and lets the worker reject bad input before it costs a GPU
slot.
"""

from __future__ import annotations

from PIL import Image

from worker.runtime.documents import images

from . import model_spec

Tensor = images.Tensor


def preprocess_bytes(data: bytes) -> Tensor:
    """Encoded image bytes -> the model's input tensor ``(1, 192, 192)``.

    Raises ``InputTooLarge`` (byte limit), ``ImageTooLarge`` (pixel limit, checked before decoding) or
    ``ImageUndecodable`` (empty, truncated, not an image, an unsupported format or mode).
    """
    return image_to_tensor(images.decode_input(data, size_px=model_spec.INPUT_SIZE_PX))


def image_to_tensor(image: Image.Image) -> Tensor:
    """A decoded image (a page the worker decoded at 192 px) -> the model's input tensor ``(1, 192, 192)``."""
    return images.letterbox(image, size_px=model_spec.INPUT_SIZE_PX)
