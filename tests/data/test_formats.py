"""Every upload format decodes to the right TaskData, and every kind of bad input is refused by name."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from edged.data.formats import decode_upload
from edged.data.upload_limits import UploadLimits
from edged.errors import InvalidInput, TooLarge

LIMITS = UploadLimits(max_upload_mb=1, max_unpacked_mb=1, max_archive_files=50, decode_memory_mb=1)


def test_zip_of_grayscale_pngs(uploads):
    task = decode_upload("digits.zip", uploads.zip(uploads.image_folders(("b", "a"), per_class=3)), LIMITS)
    assert task.kind == "image" and task.classes == ["a", "b"]
    assert task.x.shape == (6, 1, 8, 8) and task.x.dtype == torch.uint8
    assert sorted(task.y.tolist()) == [0, 0, 0, 1, 1, 1]


def test_zip_pixels_survive_decoding(uploads):
    members = uploads.image_folders(per_class=2)
    task = decode_upload("d.zip", uploads.zip(members), LIMITS)
    first = np.array(Image.open(io.BytesIO(members["cat/0.png"])))
    assert torch.equal(task.x[0, 0], torch.from_numpy(first))


def test_mixed_modes_become_rgb_and_jpeg_is_accepted(uploads):
    members = uploads.image_folders(per_class=2)
    members["dog/rgb.jpg"] = uploads.image(mode="RGB", fmt="JPEG")
    task = decode_upload("d.zip", uploads.zip(members), LIMITS)
    assert task.x.shape == (5, 3, 8, 8)


@pytest.mark.parametrize("name,mode", [("d.tar", "w"), ("d.tar.gz", "w:gz"), ("d.tgz", "w:gz")])
def test_tar_image_folders(uploads, name, mode):
    task = decode_upload(name, uploads.tar(uploads.image_folders(per_class=2), mode=mode), LIMITS)
    assert task.kind == "image" and task.x.shape == (4, 1, 8, 8) and task.classes == ["cat", "dog"]


def test_single_wrapping_folder_is_allowed(uploads):
    members = {f"set/{name}": content for name, content in uploads.image_folders(per_class=2).items()}
    assert decode_upload("d.zip", uploads.zip(members), LIMITS).classes == ["cat", "dog"]


def test_npz_images_tabular_and_class_names(uploads):
    y = np.array([0, 1, 0, 1])
    images = decode_upload("i.npz", uploads.npz(x=np.zeros((4, 5, 6), np.uint8), y=y), LIMITS)
    assert images.kind == "image" and images.x.shape == (4, 1, 5, 6)
    rgb = decode_upload("r.npz", uploads.npz(x=np.zeros((4, 3, 5, 6), np.float32), y=y), LIMITS)
    assert rgb.x.shape == (4, 3, 5, 6) and rgb.x.dtype == torch.float32
    named = decode_upload("t.npz", uploads.npz(x=np.ones((4, 7)), y=y, classes=np.array(["no", "yes"])), LIMITS)
    assert named.kind == "tabular" and named.x.shape == (4, 7) and named.classes == ["no", "yes"]


def test_npz_labels_without_classes_are_named_by_value(uploads):
    task = decode_upload("t.npz", uploads.npz(x=np.ones((3, 2)), y=np.array([10, 2, 2])), LIMITS)
    assert task.classes == ["2", "10"] and task.y.tolist() == [1, 0, 0]


def test_jsonl_with_string_and_integer_labels():
    lines = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}, {"text": "ok", "label": "pos"}]
    task = decode_upload("t.jsonl", "\n".join(map(json.dumps, lines)).encode() + b"\n\n", LIMITS)
    assert task.kind == "text" and task.x == ["good", "bad", "ok"] and task.classes == ["neg", "pos"]
    ints = decode_upload("t.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n', LIMITS)
    assert ints.classes == ["0", "1"] and ints.y.tolist() == [1, 0]


def test_csv_features_and_label():
    task = decode_upload("t.csv", b"f1,label,f2\n1.5,a,2\n3,b,-4e2\n", LIMITS)
    assert task.kind == "tabular" and task.classes == ["a", "b"]
    assert task.x.tolist() == [[1.5, 2.0], [3.0, -400.0]]


def _zip_with_raw_name(name: str, uploads) -> bytes:
    """zipfile normalises names on write; patch the stored bytes to keep an unsafe one."""
    placeholder = "x" * len(name)
    members = uploads.image_folders(per_class=2)
    members[placeholder] = b"data"
    return uploads.zip(members).replace(placeholder.encode(), name.encode())


@pytest.mark.parametrize("name", ["../evil.png", "/etc/evil.png", "a/../../e.png"])
def test_zip_path_traversal_is_refused(uploads, name):
    with pytest.raises(InvalidInput, match="unsafe path"):
        decode_upload("d.zip", _zip_with_raw_name(name, uploads), LIMITS)


@pytest.mark.parametrize("name", ["../evil.png", "/abs/evil.png"])
def test_tar_path_traversal_is_refused(uploads, name):
    members = uploads.image_folders(per_class=2)
    members[name] = uploads.image()
    with pytest.raises(InvalidInput, match="unsafe path"):
        decode_upload("d.tar", uploads.tar(members), LIMITS)


def test_tar_links_are_refused(uploads):
    buffer = io.BytesIO(uploads.tar(uploads.image_folders(per_class=2)))
    with tarfile.open(fileobj=buffer, mode="a") as archive:
        link = tarfile.TarInfo("cat/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    with pytest.raises(InvalidInput, match="is a link"):
        decode_upload("d.tar", buffer.getvalue(), LIMITS)


def test_zip_bomb_is_refused_by_declared_size(uploads):
    members = uploads.image_folders(per_class=2)
    members["cat/bomb.png"] = bytes(2 * 1024 * 1024)  # 2 MiB of zeros compresses to ~2 KiB
    bomb = uploads.zip(members)
    assert len(bomb) < 50_000
    with pytest.raises(TooLarge, match="decompression bomb"):
        decode_upload("d.zip", bomb, LIMITS)


def test_zip_bomb_with_lying_header_is_refused_while_reading(uploads):
    """Headers claim 1 KiB while the deflate stream holds 2 MiB: refused, whichever check fires first
    (zipfile stops at the declared size and the CRC then fails; our counting bounds what is read)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cat/bomb.png", bytes(2 * 1024 * 1024))
    data = bytearray(buffer.getvalue())
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # local header and central directory entry
        at = data.index(header)
        size_at = at + (22 if header == b"PK\x03\x04" else 24)
        data[size_at : size_at + 4] = (1024).to_bytes(4, "little")
    with pytest.raises((TooLarge, InvalidInput)):
        decode_upload("d.zip", bytes(data), UploadLimits(1, 0.5, 50))


def test_tar_gz_bomb_is_refused(uploads):
    members = uploads.image_folders(per_class=2)
    members["cat/bomb.png"] = bytes(2 * 1024 * 1024)
    with pytest.raises(TooLarge, match="decompression bomb"):
        decode_upload("d.tar.gz", uploads.tar(members, mode="w:gz"), LIMITS)


def test_too_many_files_is_refused(uploads):
    members = uploads.image_folders(per_class=30)
    with pytest.raises(TooLarge, match="more than 50 files"):
        decode_upload("d.zip", uploads.zip(members), LIMITS)


def test_pixel_bomb_is_refused(uploads):
    """A small PNG declaring many pixels: refused before it is decoded."""
    buffer = io.BytesIO()
    Image.new("L", (4000, 4000)).save(buffer, "PNG")  # 16 MB of pixels in ~16 KB
    members = uploads.image_folders(per_class=2)
    members["cat/huge.png"] = buffer.getvalue()
    assert len(buffer.getvalue()) < 100_000
    with pytest.raises(TooLarge, match="cat/huge.png"):
        decode_upload("d.zip", uploads.zip(members), LIMITS)


@pytest.mark.parametrize("fmt,cut", [("d.zip", 0.5), ("d.tar", 0.5), ("d.tar.gz", 0.6)])
def test_truncated_archives_are_refused(uploads, fmt, cut):
    members = uploads.image_folders(per_class=3)
    data = uploads.zip(members) if fmt.endswith("zip") else uploads.tar(members, "w:gz" if fmt.endswith("gz") else "w")
    with pytest.raises(InvalidInput, match="truncated|corrupt"):
        decode_upload(fmt, data[: int(len(data) * cut)], LIMITS)


def test_non_image_file_in_image_archive(uploads):
    members = uploads.image_folders(per_class=2)
    members["dog/notes.txt"] = b"hello"
    with pytest.raises(InvalidInput, match=r"dog/notes.txt is not a PNG or JPEG"):
        decode_upload("d.zip", uploads.zip(members), LIMITS)


def test_other_image_formats_are_refused(uploads):
    members = uploads.image_folders(per_class=2)
    members["dog/x.bmp"] = uploads.image(fmt="BMP")
    with pytest.raises(InvalidInput, match="BMP"):
        decode_upload("d.zip", uploads.zip(members), LIMITS)


def test_inconsistent_image_sizes_are_named(uploads):
    members = uploads.image_folders(per_class=3)
    members["dog/big.png"] = uploads.image(size=(16, 12))
    with pytest.raises(InvalidInput, match=r"cat/0.png is 8x8 but dog/big.png is 16x12"):
        decode_upload("d.zip", uploads.zip(members), LIMITS)


def test_files_outside_class_folders(uploads):
    members = uploads.image_folders(per_class=2)
    members["loose.png"] = uploads.image()
    with pytest.raises(InvalidInput, match="loose.png is not directly inside a class folder"):
        decode_upload("d.zip", uploads.zip(members), LIMITS)


def test_one_class_only(uploads):
    with pytest.raises(InvalidInput, match="class"):
        decode_upload("d.zip", uploads.zip(uploads.image_folders(("cat",), per_class=3)), LIMITS)
    with pytest.raises(InvalidInput, match="only one class"):
        decode_upload("t.csv", b"f,label\n1,a\n2,a\n", LIMITS)


@pytest.mark.parametrize(
    "name,data,match",
    [
        ("t.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b"}\n', "line 2: missing or invalid 'label'"),
        ("t.csv", b"f,label\n1,a\n2,\n", "line 3: missing label"),
        ("t.csv", b"f,g\n1,2\n", "no 'label' column"),
    ],
)
def test_missing_labels(name, data, match):
    with pytest.raises(InvalidInput, match=match):
        decode_upload(name, data, LIMITS)


def test_npz_missing_y(uploads):
    with pytest.raises(InvalidInput, match="missing array 'y'"):
        decode_upload("t.npz", uploads.npz(x=np.ones((3, 2))), LIMITS)


@pytest.mark.parametrize("name", ["e.zip", "e.tar", "e.npz", "e.csv", "e.jsonl"])
def test_empty_files(name):
    with pytest.raises(InvalidInput, match="empty"):
        decode_upload(name, b"", LIMITS)


def test_empty_archive(uploads):
    with pytest.raises(InvalidInput, match="holds no images"):
        decode_upload("d.zip", uploads.zip({}), LIMITS)


def test_nan_and_inf_are_refused(uploads):
    x = np.ones((4, 2))
    x[1, 1] = np.nan
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        decode_upload("t.npz", uploads.npz(x=x, y=np.array([0, 1, 0, 1])), LIMITS)
    with pytest.raises(InvalidInput, match="line 3: column 'f' holds 'inf'"):
        decode_upload("t.csv", b"f,label\n1,a\ninf,b\n", LIMITS)


def test_pickled_npz_is_refused(uploads):
    data = uploads.npz(x=np.array([{"a": 1}, {"b": 2}], dtype=object), y=np.array([0, 1]))
    with pytest.raises(InvalidInput, match="pickled"):
        decode_upload("t.npz", data, LIMITS)


def test_unknown_extension_names_the_accepted_ones():
    with pytest.raises(InvalidInput) as caught:
        decode_upload("data.xlsx", b"x", LIMITS)
    assert ".npz" in caught.value.detail["accepted"] and ".tar.gz" in caught.value.detail["accepted"]


def test_over_the_upload_limit():
    with pytest.raises(TooLarge, match="upload limit"):
        decode_upload("t.csv", b"f,label\n" + b"1,a\n" * 300_000, LIMITS)


def test_zip_symlinks_are_refused(uploads):
    import stat

    buffer = io.BytesIO(uploads.zip(uploads.image_folders(per_class=2)))
    with zipfile.ZipFile(buffer, "a") as archive:
        link = zipfile.ZipInfo("cat/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(InvalidInput, match="symbolic link"):
        decode_upload("d.zip", buffer.getvalue(), LIMITS)


def test_os_litter_is_skipped(uploads):
    members = uploads.image_folders(per_class=2)
    members.update({"__MACOSX/cat/._0.png": b"junk", "cat/.DS_Store": b"junk"})
    assert len(decode_upload("d.zip", uploads.zip(members), LIMITS)) == 4


def test_decode_budget_bounds_every_format(uploads):
    """Each format's decoded data is reserved against decode_memory_mb before it is allocated."""
    small = UploadLimits(max_upload_mb=10, max_unpacked_mb=64, max_archive_files=50, decode_memory_mb=1)
    csv_rows = b"a,b,c,d,label\n" + b"1,2,3,4,x\n5,6,7,8,y\n" * 40_000  # 80,000 x 4 float32 = 1.2 MiB
    jsonl = b"".join(json.dumps({"text": "t" * 1000, "label": "ab"[i % 2]}).encode() + b"\n" for i in range(2000))
    npz = uploads.npz(x=np.zeros((1000, 300), np.float64), y=np.arange(1000) % 2)  # 2.3 MiB of float64
    for name, data in [("t.csv", csv_rows), ("t.jsonl", jsonl), ("t.npz", npz)]:
        with pytest.raises(TooLarge, match="decode memory budget") as caught:
            decode_upload(name, data, small)
        assert caught.value.detail["limit_decode_mb"] == 1, name
        decode_upload(name, data, UploadLimits(max_upload_mb=10, max_unpacked_mb=64, decode_memory_mb=16))


def test_rgb_pixels_are_reserved_before_decoding(uploads):
    """Eight 256x256 RGB images (1.5 MiB of pixels) cannot fit a 1 MiB budget: refused from the headers."""
    members = {f"{c}/{i}.png": uploads.image(size=(256, 256), mode="RGB", seed=i) for c in "ab" for i in range(4)}
    with pytest.raises(TooLarge, match="8 images of 256x256"):
        decode_upload("d.zip", uploads.zip(members), UploadLimits(10, 64, 50, decode_memory_mb=1))


@pytest.mark.parametrize("label", ["\u00b2", "--1", "\u0661"])  # superscript two, double minus, Arabic-Indic one
def test_labels_int_would_refuse_are_names(label):
    task = decode_upload("t.csv", f"f,label\n1,{label}\n2,7\n3,{label}\n".encode(), LIMITS)
    assert task.classes == ["7", label] and task.y.tolist() == [1, 0, 1]


def test_npz_in_big_endian_and_fortran_order(uploads):
    x = np.asfortranarray(np.arange(12, dtype=">f8").reshape(4, 3))
    task = decode_upload("t.npz", uploads.npz(x=x, y=np.array([0, 1, 0, 1], dtype=">i8")), LIMITS)
    assert task.x.tolist() == x.astype(np.float32).tolist() and task.y.tolist() == [0, 1, 0, 1]
