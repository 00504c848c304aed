"""Array and text uploads: `.npz` (arrays x, y[, classes]), `.jsonl` (text, label), `.csv` (features, label)."""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from typing import Union

import numpy as np
import torch

from edged.data.task import Kind, TaskData
from edged.data.upload_archive import read_zip
from edged.data.upload_limits import UploadLimits
from edged.errors import InvalidInput

NPZ_HINT = "x (N, H, W) or (N, C, H, W) images with C in {1, 3}, or (N, F) features; y (N,) labels"
JSONL_HINT = 'one JSON object per line: {"text": "...", "label": "name" or 3}'
CSV_HINT = "a header row, numeric feature columns and a 'label' column"


def encode_labels(source: str, labels: list[str]) -> tuple[torch.Tensor, list[str]]:
    """Label names -> (int64 (N,) indices, sorted class names); integer-looking names sort numerically."""
    classes = sorted(set(labels), key=lambda s: (0, int(s), "") if _is_int(s) else (1, 0, s))
    if len(classes) < 2:
        raise InvalidInput(f"{source}: only one class ({classes[0]!r}); classification needs at least 2")
    index = {name: i for i, name in enumerate(classes)}
    return torch.tensor([index[label] for label in labels], dtype=torch.int64), classes


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def decode_npz(source: str, data: bytes, limits: UploadLimits) -> TaskData:
    arrays = {}
    for name, content in read_zip(source, data, limits):  # size-checked before numpy sees it
        try:
            arrays[name.removesuffix(".npy")] = np.lib.format.read_array(io.BytesIO(content), allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise InvalidInput(f"{source}: array {name} cannot be read (pickled objects are refused): {exc}") from None
    for required in ("x", "y"):
        if required not in arrays:
            raise InvalidInput(f"{source}: missing array {required!r}; found {sorted(arrays)}", detail={"accepted": NPZ_HINT})
    y, classes = _npz_labels(source, arrays["y"], arrays.get("classes"))
    kind, x = _npz_inputs(source, arrays["x"])
    return TaskData(kind, x, y, classes)


def _npz_labels(source: str, y: np.ndarray, classes: Union[np.ndarray, None]) -> tuple[torch.Tensor, list[str]]:
    if y.ndim != 1:
        raise InvalidInput(f"{source}: y must be 1-d (N,), got shape {list(y.shape)}", detail={"accepted": NPZ_HINT})
    if y.dtype.kind not in "iuU":
        raise InvalidInput(f"{source}: y must hold integer or string labels, got {y.dtype}")
    if classes is None:
        return encode_labels(source, [str(v) for v in y.tolist()])
    if y.dtype.kind == "U":
        raise InvalidInput(f"{source}: with a 'classes' array, y must hold integer indices into it")
    return torch.from_numpy(y.astype(np.int64)), [str(c) for c in classes.reshape(-1).tolist()]


def _npz_inputs(source: str, x: np.ndarray) -> tuple[Kind, torch.Tensor]:
    if x.dtype.kind not in "uifb":
        raise InvalidInput(f"{source}: x must be numeric, got {x.dtype}", detail={"accepted": NPZ_HINT})
    if x.ndim == 2:
        return "tabular", torch.from_numpy(x.astype(np.float32))  # (N, F)
    if x.ndim == 3:
        x = x[:, None]  # (N, 1, H, W)
    if x.ndim != 4:
        raise InvalidInput(f"{source}: x has shape {list(x.shape)}", detail={"accepted": NPZ_HINT})
    if x.dtype.kind == "f":
        if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
            raise InvalidInput(f"{source}: float images must be finite and in [0, 1]")
        return "image", torch.from_numpy(x.astype(np.float32))
    if x.size and (x.min() < 0 or x.max() > 255):
        raise InvalidInput(f"{source}: integer images must lie in [0, 255]")
    return "image", torch.from_numpy(x.astype(np.uint8))  # (N, C, H, W)


def decode_jsonl(source: str, data: bytes, limits: UploadLimits) -> TaskData:
    texts, labels = [], []
    for number, line in enumerate(_text(source, data).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{source} line {number}: not JSON: {exc}", detail={"accepted": JSONL_HINT}) from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InvalidInput(f"{source} line {number}: needs a string 'text'", detail={"accepted": JSONL_HINT})
        label = record.get("label")
        if isinstance(label, bool) or not isinstance(label, (str, int)) or label == "":
            raise InvalidInput(f"{source} line {number}: missing or invalid 'label' {label!r}", detail={"accepted": JSONL_HINT})
        texts.append(record["text"])
        labels.append(str(label))
    if not texts:
        raise InvalidInput(f"{source}: no records", detail={"accepted": JSONL_HINT})
    y, classes = encode_labels(source, labels)
    return TaskData("text", texts, y, classes)


def decode_csv(source: str, data: bytes, limits: UploadLimits) -> TaskData:
    rows = csv.reader(io.StringIO(_text(source, data)))
    header = next(rows, None)
    if not header or "label" not in header:
        raise InvalidInput(f"{source}: the header row has no 'label' column", detail={"accepted": CSV_HINT})
    label_at = header.index("label")
    features, labels = [], []
    for number, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise InvalidInput(f"{source} line {number}: {len(row)} fields, the header has {len(header)}")
        if not row[label_at].strip():
            raise InvalidInput(f"{source} line {number}: missing label", detail={"accepted": CSV_HINT})
        labels.append(row[label_at].strip())
        features.append([_number(source, number, header[i], v) for i, v in enumerate(row) if i != label_at])
    if not labels or len(header) < 2:
        raise InvalidInput(f"{source}: needs at least one data row and one feature column", detail={"accepted": CSV_HINT})
    y, classes = encode_labels(source, labels)
    return TaskData("tabular", torch.tensor(features, dtype=torch.float32), y, classes)  # x: (N, F)


def _number(source: str, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"{source} line {line}: column {column!r} holds {text!r}, not a number") from None
    if not math.isfinite(value):
        raise InvalidInput(f"{source} line {line}: column {column!r} holds {text!r}; features must be finite")
    return value


def _text(source: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{source}: not UTF-8 text: {exc}") from None
