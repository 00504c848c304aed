"""Predict request bodies as samples for a task's model, refused with a 4xx that says what is accepted.

- image tasks: multipart image files (field `file`, repeated; PNG, JPEG, anything Pillow opens), or an .npz
  whose `x` is uint8 (N, H, W) / (N, C, H, W) with C in {1, 3}; each image is resized to the model's size;
- tabular tasks: an .npz whose `x` is (N, F) numbers;
- text tasks: JSON `{"texts": ["...", ...]}`.
Decoding is bounded as an upload's is (EDGED_DECODE_MEMORY_MB for the whole request): an image's pixels are
counted from its header and an .npz array's bytes from its .npy header before any are decoded; tabular features
must be finite float32 numbers (NaN or inf would come back as logits JSON cannot carry).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from edged.data.decode_budget import DecodeBudget
from edged.data.upload_limits import UploadLimits
from edged.data.upload_tables import read_npz
from edged.errors import InvalidInput, TooLarge

ACCEPTED = {
    "image": "image files as multipart field 'file' (PNG, JPEG, ...) or an .npz with 'x' uint8 (N, H, W) or "
             "(N, C, H, W), C in {1, 3}",
    "tabular": "an .npz with 'x' numbers shaped (N, features), as multipart field 'file'",
    "text": "JSON {\"texts\": [\"...\", ...]}",
}
MAX_SAMPLES = 1024  # per request: a micro-batch gathers requests, a request is not a dataset
# Texts are tokenized whole on the inference thread, before truncation to the task's max_length: about 1 s per
# million characters on one core of the x86 build machine (MiniLM's fast tokenizer, measured), during which no
# task is served. A request holds at most this many characters.
MAX_TEXT_CHARS = 2**20


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
    characters = sum(len(t) for t in texts)
    if characters > MAX_TEXT_CHARS:
        raise TooLarge(f"texts of {characters:,} characters in one request; at most {MAX_TEXT_CHARS:,} (a task reads "
                       "only its first max_length tokens of each: send shorter texts, or fewer per request)")
    return _counted(Samples("text", texts))


def samples_from_files(files: list[tuple[str, bytes]], kind: str, limits: UploadLimits,
                       features: Optional[int] = None) -> Samples:
    """(filename, bytes) of each uploaded file as the task's samples, decoded within one budget for the request;
    `features`: the features per sample a tabular task takes, when known."""
    if kind == "text":
        raise InvalidInput(f"this task takes text: {ACCEPTED['text']}, not files", detail={"accepted": ACCEPTED["text"]})
    npz = [(name, data) for name, data in files if name.lower().endswith(".npz")]
    if npz:
        if len(files) != 1:
            raise InvalidInput("send one .npz, or image files, not both", detail={"accepted": ACCEPTED[kind]})
        return _counted(_from_npz(npz[0][0], npz[0][1], kind, limits, features))
    if kind != "image":
        raise InvalidInput(f"this task takes {ACCEPTED[kind]}", detail={"accepted": ACCEPTED[kind]})
    if len(files) > MAX_SAMPLES:  # before decoding any
        raise TooLarge(f"{len(files)} images in one request; at most {MAX_SAMPLES}")
    budget = DecodeBudget("the request's images", limits)
    return _counted(Samples("image", [_decode_image(name, data, budget) for name, data in files]))


def _check_kind(kind: str, sent: str) -> None:
    if kind != sent:
        raise InvalidInput(f"this task takes {kind} inputs: {ACCEPTED[kind]}", detail={"accepted": ACCEPTED[kind]})


def _counted(samples: Samples) -> Samples:
    if len(samples) == 0:
        raise InvalidInput(f"no inputs: send {ACCEPTED[samples.kind]}", detail={"accepted": ACCEPTED[samples.kind]})
    if len(samples) > MAX_SAMPLES:
        raise TooLarge(f"{len(samples)} inputs in one request; at most {MAX_SAMPLES}")
    return samples


def _decode_image(name: str, data: bytes, budget: DecodeBudget) -> Tensor:
    """(C, H, W) uint8, C = 1 for grayscale, else 3 (RGB); its pixels reserved in the request's budget first."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            budget.reserve(width * height * 3, f"{name}, {width} x {height} pixels")  # TooLarge past the budget
            image.load()
            pixels = np.asarray(image if image.mode in ("L", "RGB") else image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"{name} is not a readable image ({exc}); accepted: {ACCEPTED['image']}",
                           detail={"accepted": ACCEPTED["image"]}) from None
    if pixels.ndim == 2:
        return torch.from_numpy(pixels.copy())[None]  # (1, H, W)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())  # (3, H, W)


def _from_npz(name: str, data: bytes, kind: str, limits: UploadLimits, features: Optional[int]) -> Samples:
    budget = DecodeBudget(name, limits)
    arrays = read_npz(name, data, limits, budget)  # InvalidInput naming the file, TooLarge past the budget
    if "x" not in arrays:
        raise InvalidInput(f"{name} has no array 'x'; accepted: {ACCEPTED[kind]}", detail={"accepted": ACCEPTED[kind]})
    x = arrays["x"]
    if kind == "tabular":
        if x.ndim != 2 or x.dtype.kind not in "uif":
            raise InvalidInput(f"{name}: 'x' is {x.dtype} {list(x.shape)}; accepted: {ACCEPTED[kind]}",
                               detail={"accepted": ACCEPTED[kind]})
        if features is not None and x.shape[1] != features:
            raise InvalidInput(f"{name}: 'x' has {x.shape[1]} features per sample; this task takes {features}",
                               detail={"accepted": ACCEPTED[kind], "features": features})
        budget.reserve(x.size * 4, "x as float32")
        values = x.astype(np.float32)  # (N, F)
        if not np.isfinite(values).all():
            raise InvalidInput(f"{name}: 'x' holds NaN, infinite or beyond-float32 values; accepted: finite numbers",
                               detail={"accepted": ACCEPTED[kind]})
        return Samples("tabular", torch.from_numpy(values))
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[1] not in (1, 3)) or 0 in x.shape[-2:]:
        raise InvalidInput(f"{name}: 'x' is {x.dtype} {list(x.shape)}; accepted: {ACCEPTED[kind]}",
                           detail={"accepted": ACCEPTED[kind]})
    images = torch.from_numpy(x if x.ndim == 4 else x[:, None])  # (N, C, H, W)
    return Samples("image", list(images))
