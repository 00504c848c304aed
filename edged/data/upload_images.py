"""Image-folder archives (`<class>/<image>`, PNG or JPEG) decoded with Pillow into an image TaskData.

Images stay uint8 (N, C, H, W): C = 1 when every image is grayscale ("L"), else 3 (RGB).
Classes are the sorted folder names. One optional top-level folder holding all class folders is allowed.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import PurePosixPath

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from edged.data.task import TaskData
from edged.data.upload_archive import Members
from edged.data.upload_limits import UploadLimits
from edged.errors import InvalidInput, TooLarge

IMAGE_FORMATS = ("PNG", "JPEG")
LAYOUT_HINT = "an archive of class folders: <class>/<image>.png or .jpg"


def decode_image_folders(source: str, members: Members, limits: UploadLimits) -> TaskData:
    labelled = _class_of_each(source, [name for name, _ in members])
    # Members and their decoded pixels share one budget: both are held in memory at once.
    pixel_budget = [limits.max_unpacked_bytes - sum(len(content) for _, content in members)]
    images = [_decode_image(source, name, content, pixel_budget) for name, content in members]
    _check_one_size(source, [name for name, _ in members], images)
    mode = "L" if all(image.mode == "L" for image in images) else "RGB"
    pixels = np.stack([np.asarray(image.convert(mode)) for image in images])  # (N, H, W) or (N, H, W, 3)
    x = torch.from_numpy(pixels)
    x = x.unsqueeze(1) if mode == "L" else x.permute(0, 3, 1, 2).contiguous()  # (N, C, H, W) uint8
    classes = sorted(set(labelled))
    index = {name: i for i, name in enumerate(classes)}
    y = torch.tensor([index[c] for c in labelled], dtype=torch.int64)  # (N,)
    return TaskData("image", x, y, classes)


def _class_of_each(source: str, names: list[str]) -> list[str]:
    if not names:
        raise InvalidInput(f"{source}: the archive holds no images", detail={"accepted": LAYOUT_HINT})
    parts = [PurePosixPath(name).parts for name in names]
    if all(len(p) == 3 for p in parts) and len({p[0] for p in parts}) == 1:
        parts = [p[1:] for p in parts]  # a single wrapping folder, as zipping a directory produces
    for name, p in zip(names, parts):
        if len(p) != 2:
            raise InvalidInput(f"{source}: {name} is not directly inside a class folder", detail={"accepted": LAYOUT_HINT})
    return [p[0] for p in parts]


def _decode_image(source: str, name: str, content: bytes, pixel_budget: list[float]) -> Image.Image:
    """Decode one member; `pixel_budget` (a one-item list, shared across calls) bounds decoded bytes."""
    try:
        with Image.open(io.BytesIO(content)) as image:  # reads the header only
            if image.format not in IMAGE_FORMATS:
                raise InvalidInput(f"{source}: {name} is a {image.format} image", detail={"accepted": LAYOUT_HINT})
            pixel_budget[0] -= image.width * image.height * len(image.getbands())
            if pixel_budget[0] < 0:
                raise TooLarge(f"{source}: decoded images exceed the unpacked size limit (at {name})")
            image.load()
            return image.copy()
    except Image.DecompressionBombError:
        raise TooLarge(f"{source}: {name} declares too many pixels (decompression bomb?)") from None
    except UnidentifiedImageError:
        raise InvalidInput(f"{source}: {name} is not a PNG or JPEG image", detail={"accepted": LAYOUT_HINT}) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"{source}: {name} is truncated or corrupt: {exc}") from None


def _check_one_size(source: str, names: list[str], images: list[Image.Image]) -> None:
    sizes = Counter(image.size for image in images)
    if len(sizes) == 1:
        return
    (common, _), (other, _) = sizes.most_common(2)
    example = {size: next(n for n, im in zip(names, images) if im.size == size) for size in (common, other)}
    raise InvalidInput(
        f"{source}: images differ in size: {example[common]} is {common[0]}x{common[1]} but "
        f"{example[other]} is {other[0]}x{other[1]} ({len(sizes)} sizes in all); all images must share one size",
        detail={"sizes": {f"{w}x{h}": n for (w, h), n in sizes.items()}},
    )
