"""Turning task data into model-ready tensors: image resizing and normalisation, text tokenisation.

Every function returns CPU tensors with samples on dim 0, the `Inputs` of `edged.data.task`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from edged.errors import InvalidInput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 64
DEFAULT_MAX_LENGTH = 128
IMAGE_SIZE_RANGE = (16, 1024)
CHUNK = 512  # images converted at a time, so the float intermediates stay small


def preprocess_images(images: Tensor, image_size: int = DEFAULT_IMAGE_SIZE) -> Tensor:
    """uint8 (N, C, H, W) in [0, 255] or float in [0, 1], C in {1, 3} -> float32 (N, 3, S, S).

    Resized (bilinear, antialiased) to S x S = image_size x image_size (the aspect ratio is not
    kept), grayscale repeated to 3 channels, then normalised with ImageNet's mean and std, which
    is what ImageNet-pretrained backbones expect.
    """
    check_image_size(image_size)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise InvalidInput("images must be shaped (N, C, H, W) with C = 1 or 3", detail={"shape": list(images.shape)})
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = torch.empty(images.shape[0], 3, image_size, image_size)  # (N, 3, S, S)
    for start in range(0, images.shape[0], CHUNK):
        chunk = _to_unit_float(images[start : start + CHUNK].cpu())  # (n, C, H, W) in [0, 1]
        if chunk.shape[-2:] != (image_size, image_size):
            size = (image_size, image_size)
            chunk = F.interpolate(chunk, size=size, mode="bilinear", align_corners=False, antialias=True)
        out[start : start + CHUNK] = (chunk.expand(-1, 3, -1, -1) - mean) / std
    return out


def _to_unit_float(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if images.is_floating_point():
        return images.float()
    raise InvalidInput(f"images must be uint8 or floating point, got {images.dtype}")


def check_image_size(image_size: Any) -> None:
    low, high = IMAGE_SIZE_RANGE
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not low <= image_size <= high:
        raise InvalidInput(f"image_size must be an integer in [{low}, {high}], got {image_size!r}")


def tokenize_texts(texts: list[str], tokenizer: Any, max_length: int = DEFAULT_MAX_LENGTH) -> dict[str, Tensor]:
    """Texts -> {input_ids, attention_mask}, both int64 (N, L).

    Padded to the longest text in the set (L <= max_length), truncated at max_length tokens.
    Only the ids and the mask are kept: single-segment inputs have all-zero token types, which
    is what encoders assume when token_type_ids is absent.
    """
    check_max_length(max_length, getattr(tokenizer, "model_max_length", max_length))
    if not texts:
        raise InvalidInput("no texts to tokenize")
    encoded = tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    return {key: encoded[key].to(torch.int64) for key in ("input_ids", "attention_mask")}


def check_max_length(max_length: Any, limit: int) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 2 <= max_length <= limit:
        raise InvalidInput(f"max_length must be an integer in [2, {limit}], got {max_length!r}")


def preprocess_tabular(features: Tensor) -> Tensor:
    """float (N, F) -> float32 (N, F); tabular backbones take raw features."""
    if features.dim() != 2:
        raise InvalidInput("tabular data must be shaped (N, features)", detail={"shape": list(features.shape)})
    return features.float().cpu()
