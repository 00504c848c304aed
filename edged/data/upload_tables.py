"""Array and text uploads: `.npz` (arrays x, y[, classes]), `.jsonl` (text, label), `.csv` (features, label).

Each is read incrementally (an .npz member by member, text line by line), and every array is reserved in
the upload's decode budget before it is allocated: an .npy member from its header's shape and item size.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from array import array
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from edged.data.decode_budget import DecodeBudget
from edged.data.task import Kind, TaskData
from edged.data.upload_archive import zip_members
from edged.data.upload_limits import UploadLimits
from edged.errors import InvalidInput

NPZ_HINT = "x (N, H, W) or (N, C, H, W) images with C in {1, 3}, or (N, F) features; y (N,) labels"
NPY_HINT = "numeric or string arrays in .npy format 1.0 or 2.0 (as numpy.savez writes); no object arrays or pickles"
JSONL_HINT = 'one JSON object per line: {"text": "...", "label": "name" or 3}'
CSV_HINT = "a header row, numeric feature columns and a 'label' column"
INTEGER_LABEL = re.compile(r"-?[0-9]+")  # ASCII digits only: str.isdigit() also accepts '²', which int() refuses
CSV_BLOCK_BYTES = 1024 * 1024  # features are parsed into float32 blocks of about this size


def encode_labels(source: str, labels: list[str]) -> tuple[torch.Tensor, list[str]]:
    """Label names -> (int64 (N,) indices, sorted class names); integer-looking names sort numerically."""
    classes = sorted(set(labels), key=_label_order)
    if len(classes) < 2:
        raise InvalidInput(
            f"{source}: only one class ({classes[0]!r}); classification needs at least 2" if classes
            else f"{source}: no labels; classification needs at least 2 classes"
        )
    index = {name: i for i, name in enumerate(classes)}
    return torch.tensor([index[label] for label in labels], dtype=torch.int64), classes


def _label_order(name: str) -> tuple[int, int, str]:
    return (0, int(name), "") if INTEGER_LABEL.fullmatch(name) else (1, 0, name)


class _StreamedLabels:
    """Labels as rows stream in: each distinct name kept once, 8 bytes per sample (not a str per sample)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.per_sample = array("q")

    def __len__(self) -> int:
        return len(self.per_sample)

    def add(self, name: str) -> None:
        self.per_sample.append(self.ids.setdefault(name, len(self.ids)))

    def encode(self, source: str) -> tuple[torch.Tensor, list[str]]:
        class_of_id, classes = encode_labels(source, list(self.ids))
        return class_of_id[torch.from_numpy(np.frombuffer(self.per_sample, np.int64))], classes


def decode_npz(source: str, data: bytes, limits: UploadLimits, budget: DecodeBudget) -> TaskData:
    arrays = read_npz(source, data, limits, budget)
    for required in ("x", "y"):
        if required not in arrays:
            raise InvalidInput(f"{source}: missing array {required!r}; found {sorted(arrays)}", detail={"accepted": NPZ_HINT})
    y, classes = _npz_labels(source, arrays["y"], arrays.get("classes"))
    kind, x = _npz_inputs(source, arrays["x"], budget)
    return TaskData(kind, x, y, classes)


def read_npz(source: str, data: bytes, limits: UploadLimits, budget: DecodeBudget) -> dict[str, np.ndarray]:
    """The arrays of an .npz by name, each reserved in `budget` from its header before it is allocated."""
    arrays = {}
    with zip_members(source, data, limits) as members:
        for member in members:  # one member's stream at a time, straight into its array
            with member.stream() as stream:
                arrays[member.name.removesuffix(".npy")] = _read_npy(source, member.name, stream, budget)
    return arrays


def _read_npy(source: str, name: str, stream: io.RawIOBase, budget: DecodeBudget) -> np.ndarray:
    """One .npy member: its header checked and its size reserved before the array is allocated."""
    shape, fortran_order, dtype = _npy_header(source, name, stream)
    count = math.prod(shape)
    budget.reserve(count * dtype.itemsize, f"array {name} of shape {list(shape)} {dtype}")
    array = np.empty(count, dtype)
    view = array.view(np.uint8).data if array.nbytes else memoryview(b"")
    filled = 0
    while filled < len(view):
        read = stream.readinto(view[filled:])
        if not read:
            raise InvalidInput(f"{source}: array {name} is truncated: {filled} of {len(view)} bytes of data")
        filled += read
    return array.reshape(shape, order="F" if fortran_order else "C")


def _npy_header(source: str, name: str, stream: io.RawIOBase) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"format version {version[0]}.{version[1]}")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(stream)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise InvalidInput(f"{source}: array {name} is not a readable .npy array: {exc}", detail={"accepted": NPY_HINT}) from None
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise InvalidInput(
            f"{source}: array {name} holds {dtype}; object arrays (pickled objects) are refused", detail={"accepted": NPY_HINT}
        )
    return shape, fortran_order, dtype


def _npz_labels(source: str, y: np.ndarray, classes: np.ndarray | None) -> tuple[torch.Tensor, list[str]]:
    if y.ndim != 1:
        raise InvalidInput(f"{source}: y must be 1-d (N,), got shape {list(y.shape)}", detail={"accepted": NPZ_HINT})
    if y.dtype.kind not in "iuU":
        raise InvalidInput(f"{source}: y must hold integer or string labels, got {y.dtype}")
    if classes is None:
        values, indices = np.unique(y, return_inverse=True)  # each distinct label once, not one str per sample
        class_of_value, classes_found = encode_labels(source, [str(v) for v in values.tolist()])
        return class_of_value[torch.from_numpy(indices.reshape(-1).astype(np.int64))], classes_found
    if y.dtype.kind == "U":
        raise InvalidInput(f"{source}: with a 'classes' array, y must hold integer indices into it")
    return torch.from_numpy(y.astype(np.int64)), [str(c) for c in classes.reshape(-1).tolist()]


def _npz_inputs(source: str, x: np.ndarray, budget: DecodeBudget) -> tuple[Kind, torch.Tensor]:
    if x.dtype.kind not in "uifb":
        raise InvalidInput(f"{source}: x must be numeric, got {x.dtype}", detail={"accepted": NPZ_HINT})
    if x.ndim == 2:
        return "tabular", torch.from_numpy(_as_native(x, np.float32, budget))  # (N, F)
    if x.ndim == 3:
        x = x[:, None]  # (N, 1, H, W)
    if x.ndim != 4:
        raise InvalidInput(f"{source}: x has shape {list(x.shape)}", detail={"accepted": NPZ_HINT})
    low, high = (x.min(), x.max()) if x.size else (0, 0)  # NaN and inf show in min or max: no mask needed
    if x.dtype.kind == "f":
        if not (np.isfinite(low) and np.isfinite(high) and low >= 0.0 and high <= 1.0):
            raise InvalidInput(f"{source}: float images must be finite and in [0, 1]", detail={"accepted": NPZ_HINT})
        return "image", torch.from_numpy(_as_native(x, np.float32, budget))
    if low < 0 or high > 255:
        raise InvalidInput(f"{source}: integer images must lie in [0, 255]", detail={"accepted": NPZ_HINT})
    return "image", torch.from_numpy(_as_native(x, np.uint8, budget))  # (N, C, H, W)


def _as_native(x: np.ndarray, dtype: type, budget: DecodeBudget) -> np.ndarray:
    """`x` as native-endian `dtype` (torch needs it), copying (within the budget) only if it is not already."""
    target = np.dtype(dtype)
    if x.dtype == target:
        return x
    budget.reserve(x.size * target.itemsize, f"x as {target}")
    return x.astype(target)


def decode_jsonl(source: str, data: bytes, limits: UploadLimits, budget: DecodeBudget) -> TaskData:
    texts, labels = [], _StreamedLabels()
    for number, line in _lines(source, data):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            reason = exc if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise InvalidInput(f"{source} line {number}: not JSON: {reason}", detail={"accepted": JSONL_HINT}) from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InvalidInput(f"{source} line {number}: needs a string 'text'", detail={"accepted": JSONL_HINT})
        if not record["text"].strip():
            raise InvalidInput(f"{source} line {number}: 'text' is empty; every record needs the text to classify",
                               detail={"accepted": JSONL_HINT})
        label = record.get("label")
        if isinstance(label, bool) or not isinstance(label, (str, int)) or label == "":
            raise InvalidInput(f"{source} line {number}: missing or invalid 'label' {label!r}", detail={"accepted": JSONL_HINT})
        texts.append(record["text"])
        labels.add(str(label))
        budget.reserve(sys.getsizeof(texts[-1]) + 16, f"line {number}")  # the text, its pointer and label id
    if not texts:
        raise InvalidInput(f"{source}: no records", detail={"accepted": JSONL_HINT})
    y, classes = labels.encode(source)
    return TaskData("text", texts, y, classes)


def decode_csv(source: str, data: bytes, limits: UploadLimits, budget: DecodeBudget) -> TaskData:
    rows = csv.reader(line for _, line in _lines(source, data))
    header = _csv_row(source, rows)
    if not header or "label" not in header:
        raise InvalidInput(f"{source}: the header row has no 'label' column", detail={"accepted": CSV_HINT})
    label_at, width = header.index("label"), len(header) - 1
    # No more rows than lines: a small file gets a small block.
    block_rows = max(1, min(CSV_BLOCK_BYTES // (4 * max(width, 1)), data.count(b"\n") + 1))
    blocks: list[np.ndarray] = []
    labels, filled = _StreamedLabels(), block_rows
    while (row := _csv_row(source, rows)) is not None:
        number = rows.line_num
        if not row:
            continue
        if len(row) != len(header):
            raise InvalidInput(f"{source} line {number}: {len(row)} fields, the header has {len(header)}")
        if not row[label_at].strip():
            raise InvalidInput(f"{source} line {number}: missing label", detail={"accepted": CSV_HINT})
        if filled == block_rows:  # features go into float32 blocks, not a Python float per value
            budget.reserve(block_rows * width * 4 + 8 * block_rows, f"line {number}")
            blocks.append(np.empty((block_rows, width), np.float32))
            filled = 0
        labels.add(row[label_at].strip())
        blocks[-1][filled] = [_number(source, number, header[i], v) for i, v in enumerate(row) if i != label_at]
        filled += 1
    if not labels or width < 1:
        raise InvalidInput(f"{source}: needs at least one data row and one feature column", detail={"accepted": CSV_HINT})
    blocks[-1] = blocks[-1][:filled]
    if len(blocks) > 1:
        budget.reserve(len(labels) * width * 4, "the feature matrix")
    y, classes = labels.encode(source)
    x = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    return TaskData("tabular", torch.from_numpy(x), y, classes)  # x: (N, F)


def _csv_row(source: str, rows: Any) -> list[str] | None:
    try:
        return next(rows, None)
    except csv.Error as exc:  # e.g. a field over csv's field size limit
        raise InvalidInput(f"{source} line {rows.line_num}: not readable CSV: {exc}", detail={"accepted": CSV_HINT}) from None


def _number(source: str, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"{source} line {line}: column {column!r} holds {text!r}, not a number: a .csv holds "
                           f"numeric features; texts go in a .jsonl", detail={"accepted": {"csv": CSV_HINT,
                                                                                           "jsonl": JSONL_HINT}}) from None
    if not math.isfinite(value):
        raise InvalidInput(f"{source} line {line}: column {column!r} holds {text!r}; features must be finite")
    return value


def _lines(source: str, data: bytes) -> Iterator[tuple[int, str]]:
    """(line number, line) of UTF-8 text, decoded as it is read rather than all at once."""
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    number = 0
    try:
        for number, line in enumerate(text, start=1):
            yield number, line
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{source}: not UTF-8 text (after line {number}): {exc}") from None
