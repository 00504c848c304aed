"""The demo's upload: bundled MNIST digits as a zip of PNG class folders, as a field device would send."""

from __future__ import annotations

import io
import zipfile

import torch
from PIL import Image

from edged.data.bundled import mnist_5k
from edged.data.task import TaskData
from edged.errors import InvalidInput


def balanced_subset(task: TaskData, samples: int, seed: int = 0) -> TaskData:
    """`samples` items with classes as equal as possible, chosen by a seeded shuffle (same on every run)."""
    if not len(task.classes) <= samples <= len(task):
        raise InvalidInput(
            f"samples must be between {len(task.classes)} (one per class) and {len(task)}, got {samples}"
        )
    quota, extra = divmod(samples, len(task.classes))
    wanted = [quota + (1 if c < extra else 0) for c in range(len(task.classes))]
    taken = [0] * len(task.classes)
    picked = []
    for index in torch.randperm(len(task), generator=torch.Generator().manual_seed(seed)).tolist():
        label = int(task.y[index])
        if taken[label] < wanted[label]:
            taken[label] += 1
            picked.append(index)
    return task.subset(torch.tensor(sorted(picked)))


def png_class_zip(task: TaskData) -> bytes:
    """A zip of `<class>/<i>.png` members from a uint8 (N, 1, H, W) image task."""
    images = task.x
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 1:
        raise InvalidInput("png_class_zip takes grey uint8 images shaped (N, 1, H, W)")
    buffer = io.BytesIO()
    # PNG is compressed already: store the members instead of deflating them again.
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(len(task)):
            pixels = images[i, 0].numpy()  # (H, W) uint8
            png = io.BytesIO()
            Image.fromarray(pixels, "L").save(png, "PNG")
            archive.writestr(f"{task.classes[int(task.y[i])]}/{i}.png", png.getvalue())
    return buffer.getvalue()


def mnist_upload(samples: int = 5000, seed: int = 0) -> bytes:
    """The bundled 5,000 MNIST digits (or a balanced subset of them) as a zip of PNG class folders."""
    return png_class_zip(balanced_subset(mnist_5k(), samples, seed))
