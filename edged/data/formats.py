"""Upload formats: bytes plus a file name in, a validated TaskData out.

    .npz            arrays x, y (optional classes): images (N, H, W) / (N, C, H, W), or features (N, F)
    .jsonl          {"text": ..., "label": ...} per line                     -> text
    .csv            numeric feature columns and a `label` column             -> tabular
    .zip / .tar[.gz|.tgz]  image folders <class>/<image> (PNG or JPEG)      -> image

Every rejection is InvalidInput (422) or TooLarge (413) with a message naming the file, the line or
member, and what would be accepted. Each decode holds at most `limits.decode_memory_mb` (a DecodeBudget).
"""

from __future__ import annotations

from typing import Callable

from edged.data.decode_budget import DecodeBudget
from edged.data.task import TaskData
from edged.data.upload_archive import tar_members, zip_members
from edged.data.upload_images import LAYOUT_HINT, decode_image_folders
from edged.data.upload_limits import UploadLimits
from edged.data.upload_tables import CSV_HINT, JSONL_HINT, NPZ_HINT, decode_csv, decode_jsonl, decode_npz
from edged.errors import InvalidInput, TooLarge

Decoder = Callable[[str, bytes, UploadLimits, DecodeBudget], TaskData]

# format name -> file name endings that select it (longest endings are tried first)
EXTENSIONS = {
    "npz": (".npz",),
    "jsonl": (".jsonl",),
    "csv": (".csv",),
    "zip": (".zip",),
    "tar": (".tar", ".tar.gz", ".tgz"),
}
ACCEPTED = ", ".join(ending for endings in EXTENSIONS.values() for ending in endings)
# The layouts, for people: the upload route's OpenAPI description and the unknown-format error (the README's
# "Upload formats" says the same, with examples).
LAYOUTS = {
    ".zip / .tar / .tar.gz / .tgz": f"images: {LAYOUT_HINT} (one optional top-level folder above the class "
                                    "folders); the folder names are the classes",
    ".npz": f"arrays (numpy.savez): {NPZ_HINT}; optional classes (K,) names, then y holds indices into it; "
            "images uint8 in [0, 255] or float in [0, 1]",
    ".jsonl": f"text: {JSONL_HINT}; an empty text is refused",
    ".csv": f"tabular: {CSV_HINT}; text goes in .jsonl",
}
LAYOUTS_TEXT = "; ".join(f"{ending}: {layout}" for ending, layout in LAYOUTS.items())


def _decode_zip_images(source: str, data: bytes, limits: UploadLimits, budget: DecodeBudget) -> TaskData:
    with zip_members(source, data, limits) as members:
        return decode_image_folders(source, members, budget)


def _decode_tar_images(source: str, data: bytes, limits: UploadLimits, budget: DecodeBudget) -> TaskData:
    with tar_members(source, data, limits) as members:
        return decode_image_folders(source, members, budget)


DECODERS: dict[str, Decoder] = {
    "npz": decode_npz,
    "jsonl": decode_jsonl,
    "csv": decode_csv,
    "zip": _decode_zip_images,
    "tar": _decode_tar_images,
}


def detect_format(filename: str) -> str:
    """The format a file name selects, or InvalidInput listing the accepted endings."""
    lower = filename.lower()
    endings = sorted(((e, f) for f, es in EXTENSIONS.items() for e in es), key=lambda ef: -len(ef[0]))
    for ending, fmt in endings:
        if lower.endswith(ending):
            return fmt
    raise InvalidInput(f"{filename or 'the upload'}: unknown format; accepted: {ACCEPTED}",
                       detail={"accepted": ACCEPTED, "layouts": LAYOUTS})


def decode_as(fmt: str, source: str, data: bytes, limits: UploadLimits) -> TaskData:
    """Decode `data` as format `fmt`; `source` names the data in error messages."""
    if len(data) > limits.max_upload_bytes:
        raise TooLarge(
            f"{source}: {len(data)} bytes is over the {limits.max_upload_mb:g} MiB upload limit",
            detail={"limit_mb": limits.max_upload_mb},
        )
    if not data:
        raise InvalidInput(f"{source}: the file is empty", detail={"accepted": ACCEPTED})
    try:
        return DECODERS[fmt](source, data, limits, DecodeBudget(source, limits))
    except InvalidInput as exc:  # TaskData's own checks do not know the file's name
        if exc.message.startswith(source):
            raise
        raise type(exc)(f"{source}: {exc.message}", exc.detail) from None


def decode_upload(filename: str, data: bytes, limits: UploadLimits) -> TaskData:
    """Decode an uploaded file, choosing the format by its name's extension."""
    return decode_as(detect_format(filename), filename, data, limits)
