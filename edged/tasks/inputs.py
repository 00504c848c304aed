"""Predict request bodies as samples for a task's model, refused with a 4xx that says what is accepted.

- image tasks: multipart image files (field `file`, repeated; PNG, JPEG, anything Pillow opens), or an .npz
  whose `x` is uint8 (N, H, W) / (N, C, H, W) with C in {1, 3}; each image is resized to the model's size;
- tabular tasks: an .npz whose `x` is (N, F) numbers;
- text tasks: JSON `{"texts": ["...", ...]}`.
Decoding is bounded: an image's pixels are counted from its header before any are decoded.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from edged.errors import InvalidInput, TooLarge

ACCEPTED = {
    "image": "image files as multipart field 'file' (PNG, JPEG, ...) or an .npz with 'x' uint8 (N, H, W) or "
             "(N, C, H, W), C in {1, 3}",
    "tabular": "an .npz with 'x' numbers shaped (N, features), as multipart field 'file'",
    "text": "JSON {\"texts\": [\"...\", ...]}",
}
MAX_SAMPLES = 1024  # per request: a micro-batch gathers requests, a request is not a dataset


@dataclass
class Samples:
    kind: str
    x: Union[list[Tensor], Tensor, list[str]]  # images: (C, H, W) uint8 each; tabular: (N, F) float32; texts

    def __len__(self) -> int:
        return len(self.x)


def texts_from_json(body: Any, kind: str) -> Samples:
    _check_kind(kind, "text")
    texts = body.get("texts") if isinstance(body, dict) else None
    if not isinstance(texts, list) or not all(isinstance(t, str) and t.strip() for t in texts):
        raise InvalidInput(f"a text task takes {ACCEPTED['text']}, each text non-empty", detail={"accepted": ACCEPTED["text"]})
    return _counted(Samples("text", texts))


def samples_from_files(files: list[tuple[str, bytes]], kind: str, max_pixels_bytes: int) -> Samples:
    """(filename, bytes) of each uploaded file as the task's samples."""
    if kind == "text":
        raise InvalidInput(f"this task takes text: {ACCEPTED['text']}, not files", detail={"accepted": ACCEPTED["text"]})
    npz = [(name, data) for name, data in files if name.lower().endswith(".npz")]
    if npz:
        if len(files) != 1:
            raise InvalidInput("send one .npz, or image files, not both", detail={"accepted": ACCEPTED[kind]})
        return _counted(_from_npz(npz[0][0], npz[0][1], kind))
    if kind != "image":
        raise InvalidInput(f"this task takes {ACCEPTED[kind]}", detail={"accepted": ACCEPTED[kind]})
    return _counted(Samples("image", [_decode_image(name, data, max_pixels_bytes) for name, data in files]))


def _check_kind(kind: str, sent: str) -> None:
    if kind != sent:
        raise InvalidInput(f"this task takes {kind} inputs: {ACCEPTED[kind]}", detail={"accepted": ACCEPTED[kind]})


def _counted(samples: Samples) -> Samples:
    if len(samples) == 0:
        raise InvalidInput(f"no inputs: send {ACCEPTED[samples.kind]}", detail={"accepted": ACCEPTED[samples.kind]})
    if len(samples) > MAX_SAMPLES:
        raise TooLarge(f"{len(samples)} inputs in one request; at most {MAX_SAMPLES}")
    return samples


def _decode_image(name: str, data: bytes, max_pixels_bytes: int) -> Tensor:
    """(C, H, W) uint8, C = 1 for grayscale, else 3 (RGB)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height * 3 > max_pixels_bytes:
                raise TooLarge(f"{name}: {width} x {height} pixels is more than the decode budget "
                               f"({max_pixels_bytes // 2**20} MiB, EDGED_DECODE_MEMORY_MB) allows")
            image.load()
            pixels = np.asarray(image if image.mode in ("L", "RGB") else image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"{name} is not a readable image ({exc}); accepted: {ACCEPTED['image']}",
                           detail={"accepted": ACCEPTED["image"]}) from None
    if pixels.ndim == 2:
        return torch.from_numpy(pixels.copy())[None]  # (1, H, W)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())  # (3, H, W)


def _from_npz(name: str, data: bytes, kind: str) -> Samples:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            if "x" not in archive.files:
                raise InvalidInput(f"{name} has no array 'x'; accepted: {ACCEPTED[kind]}", detail={"accepted": ACCEPTED[kind]})
            x = archive["x"]
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise InvalidInput(f"{name} is not a readable .npz ({exc}); accepted: {ACCEPTED[kind]}",
                           detail={"accepted": ACCEPTED[kind]}) from None
    if kind == "tabular":
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
            raise InvalidInput(f"{name}: 'x' is {x.dtype} {list(x.shape)}; accepted: {ACCEPTED[kind]}")
        return Samples("tabular", torch.from_numpy(x.astype(np.float32)))
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[1] not in (1, 3)):
        raise InvalidInput(f"{name}: 'x' is {x.dtype} {list(x.shape)}; accepted: {ACCEPTED[kind]}",
                           detail={"accepted": ACCEPTED[kind]})
    images = torch.from_numpy(x if x.ndim == 4 else x[:, None])  # (N, C, H, W)
    return Samples("image", list(images))
