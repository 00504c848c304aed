"""Image-folder archives (`<class>/<image>`, PNG or JPEG) decoded with Pillow into an image TaskData.

Images stay uint8 (N, C, H, W): C = 1 when every image is grayscale ("L"), else 3 (RGB).
Classes are the folder names, ordered as `encode_labels` orders every format's labels. One optional
top-level folder holding all class folders is allowed.

Two passes keep memory bounded: the first reads only each image's header (format, size, mode), so the
dataset's tensor and the largest decode's transient memory are reserved in the decode budget before a
single pixel is decoded; the second decodes one member at a time straight into that tensor.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from edged.data.decode_budget import DecodeBudget
from edged.data.task import TaskData
from edged.data.upload_archive import Member
from edged.data.upload_tables import encode_labels
from edged.errors import InvalidInput, TooLarge

IMAGE_FORMATS = ("PNG", "JPEG")
LAYOUT_HINT = "an archive of class folders: <class>/<image>.png or .jpg"


@dataclass(frozen=True)
class _Header:
    member: Member
    size: tuple[int, int]  # (width, height)
    mode: str


def decode_image_folders(source: str, members: list[Member], budget: DecodeBudget) -> TaskData:
    labels = _class_of_each(source, [m.name for m in members])
    headers = [_read_header(source, m, budget) for m in members]
    _check_one_size(source, headers)
    mode = "L" if all(h.mode == "L" for h in headers) else "RGB"
    channels = 1 if mode == "L" else 3
    width, height = headers[0].size
    budget.reserve(len(headers) * channels * height * width, f"{len(headers)} images of {width}x{height}")
    largest = max(headers, key=lambda h: _transient_bytes(h, mode))
    with budget.holding(_transient_bytes(largest, mode), f"decoding {largest.member.name}"):
        pass  # the largest decode fits: refused here, before any pixel is decoded, if it does not
    x = torch.empty((len(headers), channels, height, width), dtype=torch.uint8)  # (N, C, H, W)
    pixels = x.numpy()  # the same memory, written image by image
    for i, header in enumerate(headers):
        with budget.holding(_transient_bytes(header, mode), f"decoding {header.member.name}"):
            pixels[i] = _decode_image(source, header, mode)
    y, classes = encode_labels(source, labels)
    return TaskData("image", x, y, classes)


def _transient_bytes(header: _Header, mode: str) -> int:
    """What decoding one image holds besides the dataset's tensor: the member's bytes, Pillow's decoded
    image, its conversion to the dataset's `mode` and numpy's copy of that."""
    width, height = header.size
    channels = 1 if mode == "L" else 3
    return header.member.size + width * height * (_pillow_pixel_bytes(header.mode) + _pillow_pixel_bytes(mode) + channels)


def _pillow_pixel_bytes(mode: str) -> int:
    """Bytes Pillow stores per pixel of `mode` (RGB is padded to 4; 16-bit modes take 2, the rest 4)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


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


def _read_header(source: str, member: Member, budget: DecodeBudget) -> _Header:
    """An image's header; a pixel bomb is refused here, from its declared size, before anything is decoded."""
    with member.header_stream() as stream, _opened(source, member.name, stream) as image:
        header = _Header(member, image.size, image.mode)
    own_mode = "L" if header.mode == "L" else "RGB"  # the least this image's decode can take
    with budget.holding(_transient_bytes(header, own_mode), f"decoding {member.name}"):
        return header


def _decode_image(source: str, header: _Header, mode: str) -> np.ndarray:
    """One member decoded to (C, H, W) uint8 in the dataset's mode."""
    name = header.member.name
    content = header.member.read()
    with _opened(source, name, io.BytesIO(content)) as image:
        if (image.size, image.mode) != (header.size, header.mode):
            raise InvalidInput(f"{source}: {name} changed between reads of the archive (corrupt?)")
        try:
            image.load()
            pixels = np.asarray(image if image.mode == mode else image.convert(mode))  # (H, W) or (H, W, 3)
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidInput(f"{source}: {name} is truncated or corrupt: {exc}") from None
    return pixels[None] if mode == "L" else pixels.transpose(2, 0, 1)  # (C, H, W), a view


@contextmanager
def _opened(source: str, name: str, stream: IO[bytes]) -> Iterator[Image.Image]:
    """The image in `stream`, header read, pixels not yet decoded; InvalidInput unless PNG or JPEG."""
    try:
        image = Image.open(stream)  # reads the header only
    except Image.DecompressionBombError as exc:
        raise TooLarge(
            f"{source}: {name} declares too many pixels (decompression bomb?): {exc}",
            detail={"accepted": "images within Pillow's MAX_IMAGE_PIXELS and the decode memory budget"},
        ) from None
    except UnidentifiedImageError:
        raise InvalidInput(f"{source}: {name} is not a PNG or JPEG image", detail={"accepted": LAYOUT_HINT}) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"{source}: {name} is truncated or corrupt: {exc}") from None
    with image:
        if image.format not in IMAGE_FORMATS:
            raise InvalidInput(f"{source}: {name} is a {image.format} image", detail={"accepted": LAYOUT_HINT})
        yield image


def _check_one_size(source: str, headers: list[_Header]) -> None:
    sizes = Counter(h.size for h in headers)
    if len(sizes) == 1:
        return
    (common, _), (other, _) = sizes.most_common(2)
    example = {size: next(h.member.name for h in headers if h.size == size) for size in (common, other)}
    raise InvalidInput(
        f"{source}: images differ in size: {example[common]} is {common[0]}x{common[1]} but "
        f"{example[other]} is {other[0]}x{other[1]} ({len(sizes)} sizes in all); all images must share one size",
        detail={"sizes": {f"{w}x{h}": n for (w, h), n in sizes.items()}},
    )
