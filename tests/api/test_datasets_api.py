"""/v1/datasets through the real app and a real SQLite file."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

from edged.store.db import open_db, utc_now


def _upload(client, auth, filename, data, **form):
    return client.post("/v1/datasets", headers=auth, files={"file": (filename, data)}, data=form)


def _stored_files(settings):
    return [f for _, _, files in os.walk(settings.blobs_dir) for f in files]


def _case(uploads):
    """One valid upload of every format: (file name, bytes, kind, shape of a sample)."""
    jsonl = "\n".join(json.dumps({"text": f"t{i}", "label": "ab"[i % 2]}) for i in range(4)).encode()
    return [
        ("d.zip", uploads.zip(uploads.image_folders(per_class=2)), "image", [1, 8, 8]),
        ("d.tar", uploads.tar(uploads.image_folders(per_class=2)), "image", [1, 8, 8]),
        ("d.tar.gz", uploads.tar(uploads.image_folders(per_class=2, mode="RGB"), "w:gz"), "image", [3, 8, 8]),
        ("d.npz", uploads.npz(x=np.zeros((4, 3)), y=np.array([0, 1, 1, 0])), "tabular", [3]),
        ("d.csv", b"a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n", "tabular", [2]),
        ("d.jsonl", jsonl, "text", None),
    ]


def test_upload_every_format(client, auth, uploads):
    for filename, data, kind, shape in _case(uploads):
        response = _upload(client, auth, filename, data)
        assert response.status_code == 201, (filename, response.json())
        body = response.json()
        assert body["kind"] == kind and body["shape"] == shape and body["num_samples"] == 4, filename
        assert len(body["sha256"]) == 64 and len(body["classes"]) == 2
    assert len(client.get("/v1/datasets", headers=auth).json()) == len(_case(uploads))


def test_same_bytes_same_dataset_and_get_delete(client, auth, uploads):
    data = uploads.zip(uploads.image_folders(per_class=2))
    first = _upload(client, auth, "d.zip", data, name="pets").json()
    assert first["name"] == "pets" and first["classes"] == ["cat", "dog"]
    assert first["already_stored"] is False
    again = _upload(client, auth, "copy.zip", data, name="other")
    assert again.status_code == 201 and again.json() == {**first, "already_stored": True}  # the first name kept
    assert client.get(f"/v1/datasets/{first['id']}", headers=auth).json() == first
    assert client.delete(f"/v1/datasets/{first['id']}", headers=auth).status_code == 204
    missing = client.get(f"/v1/datasets/{first['id']}", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_delete_while_a_job_uses_it_is_409(client, auth, settings):
    dataset = _upload(client, auth, "d.csv", b"f,label\n1,a\n2,b\n").json()
    db = open_db(settings.db_path)
    db["jobs"].insert(
        {"id": "j1", "state": "running", "model": "m", "method": "taskedge", "dataset_id": dataset["id"], "created_at": utc_now()}
    )
    response = client.delete(f"/v1/datasets/{dataset['id']}", headers=auth)
    assert response.status_code == 409 and response.json()["error"]["detail"] == {"jobs": ["j1"]}


def _bad_uploads(uploads):
    images = uploads.image_folders(per_class=2)
    zipped = uploads.zip(images)
    bomb = {**images, "cat/bomb.png": bytes(8 * 1024 * 1024)}
    return {
        "truncated archive": ("d.zip", zipped[: len(zipped) // 2], 422),
        "parent path": ("d.tar", uploads.tar({**images, "../evil.png": uploads.image()}), 422),
        "absolute path": ("d.tar", uploads.tar({**images, "/tmp/evil.png": uploads.image()}), 422),
        "decompression bomb": ("d.zip", uploads.zip(bomb), 413),
        "non-image file": ("d.zip", uploads.zip({**images, "cat/readme.txt": b"hi"}), 422),
        "inconsistent shapes": ("d.zip", uploads.zip({**images, "dog/x.png": uploads.image(size=(9, 9))}), 422),
        "missing labels": ("d.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b"}\n', 422),
        "one class": ("d.zip", uploads.zip(uploads.image_folders(("cat",), per_class=3)), 422),
        "empty file": ("d.csv", b"", 422),
        "unknown format": ("d.xlsx", b"PK", 422),
        "superscript label": ("d.csv", "f,label\n1,\u00b2\n2,1\n3,\u00b2\n".encode(), None),
        "double minus label": ("d.jsonl", b'{"text": "a", "label": "--1"}\n{"text": "b", "label": "1"}\n', None),
        "superscript class folder": ("d.zip", uploads.zip({"\u00b2/0.png": uploads.image(), "1/0.png": uploads.image()}), None),
        "csv field over the field limit": ("d.csv", b"f,label\n" + b"1" * 200_000 + b",a\n", 422),
        "deeply nested json": ("d.jsonl", b"[" * 100_000 + b"\n", 422),
        "huge npy shape": ("d.npz", _huge_npz(uploads), 413),
        "object npy": ("d.npz", uploads.npz(x=np.array([None, 1], dtype=object), y=np.array([0, 1])), 422),
    }


def _huge_npz(uploads):
    """x.npy's header declares (10^6, 10^6) float64: 8 TB, over 16 bytes of data."""
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(16)
    return uploads.zip({"x.npy": npy, "y.npy": _npy(np.array([0, 1]))})


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("case", ["superscript label", "double minus label", "superscript class folder"])
def test_labels_that_look_like_integers_but_are_not_are_names(client, auth, uploads, case):
    """'²' passes str.isdigit() and '--1' passes lstrip('-'), yet int() refuses both: they are plain names."""
    filename, data, _ = _bad_uploads(uploads)[case]
    response = _upload(client, auth, filename, data)
    assert response.status_code == 201, response.json()
    assert sorted(response.json()["classes"]) == sorted(["1", "--1" if "minus" in case else "\u00b2"])


@pytest.mark.parametrize(
    "name,fragment",
    [("bad\x00name", "U+0000"), ("line\nbreak", "U+000A"), ("bidi\u202eexe.zip", "U+202E"), ("x" * 201, "1 to 200")],
)
def test_unsafe_dataset_names_are_refused_and_store_nothing(client, auth, settings, name, fragment):
    response = _upload(client, auth, "d.csv", b"f,label\n1,a\n2,b\n", name=name)
    assert response.status_code == 422, response.json()
    error = response.json()["error"]
    assert fragment in error["message"] and "printable characters" in error["detail"]["accepted"]
    assert client.get("/v1/datasets", headers=auth).json() == [] and _stored_files(settings) == []


def test_a_printable_unicode_name_is_kept(client, auth):
    response = _upload(client, auth, "d.csv", b"f,label\n1,a\n2,b\n", name="Prüfstand № 3 — 🌱")
    assert response.status_code == 201 and response.json()["name"] == "Prüfstand № 3 — 🌱"


def test_an_upload_waiting_too_long_for_a_decode_slot_is_503_with_retry_after(settings, auth):
    from fastapi.testclient import TestClient

    from edged.api.app import create_app

    one_slot = settings.model_copy(update={"max_concurrent_decodes": 1, "decode_wait_s": 0.2})
    with TestClient(create_app(one_slot)) as client:
        with client.app.state.decode_gate.slot():  # another upload is decoding
            busy = _upload(client, auth, "d.csv", b"f,label\n1,a\n2,b\n")
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
        assert busy.json()["error"]["code"] == "busy" and "EDGED_MAX_CONCURRENT_DECODES" in busy.json()["error"]["message"]
        assert client.get("/v1/datasets", headers=auth).json() == [] and _stored_files(settings) == []
        assert _upload(client, auth, "d.csv", b"f,label\n1,a\n2,b\n").status_code == 201  # the slot is free again


@pytest.mark.parametrize(
    "case",
    ["truncated archive", "parent path", "absolute path", "decompression bomb", "non-image file",
     "inconsistent shapes", "missing labels", "one class", "empty file", "unknown format",
     "csv field over the field limit", "deeply nested json", "huge npy shape", "object npy"],
)
def test_bad_uploads_are_refused_and_store_nothing(client, auth, uploads, settings, case):
    filename, data, status = _bad_uploads(uploads)[case]
    response = _upload(client, auth, filename, data)
    assert response.status_code == status, response.json()
    error = response.json()["error"]
    assert error["code"] == ("too_large" if status == 413 else "invalid_input")
    assert filename in error["message"]
    assert client.get("/v1/datasets", headers=auth).json() == []
    assert _stored_files(settings) == []


def test_upload_over_the_size_limit_is_413_and_stores_nothing(client, auth, settings):
    response = _upload(client, auth, "big.csv", b"f,label\n" + b"1,a\n" * 400_000)  # 1.6 MB > 1 MiB
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert client.get("/v1/datasets", headers=auth).json() == [] and _stored_files(settings) == []


def test_missing_file_field_lists_the_reason(client, auth):
    response = client.post("/v1/datasets", headers=auth, data={"name": "x"})
    assert response.status_code == 422
    assert response.json()["error"]["detail"][0]["loc"] == ["body", "file"]


@pytest.mark.parametrize("filename, data, says", [
    ("texts.jsonl", b'{"text": "fine", "label": "a"}\n{"text": "  ", "label": "b"}\n', "'text' is empty"),
    ("texts.csv", b"text,label\nthe match was won,sport\n", "texts go in a .jsonl"),
])
def test_text_in_the_wrong_shape_is_refused_with_the_format_that_takes_it(client, auth, settings, filename, data, says):
    response = _upload(client, auth, filename, data)
    assert response.status_code == 422, response.json()
    error = response.json()["error"]
    assert says in error["message"] and "one JSON object per line" in str(error["detail"]["accepted"])
    assert client.get("/v1/datasets", headers=auth).json() == [] and _stored_files(settings) == []


def test_upload_layouts_are_in_the_openapi_document_and_the_unknown_format_error(client, auth):
    """A user finds the layouts where they look: the upload route's description, and the error of a file
    whose ending selects no format."""
    description = client.get("/openapi.json", headers=auth).json()["paths"]["/v1/datasets"]["post"]["description"]
    for words in ("<class>/<image>", "x (N, H, W)", '{"text": "..."', "'label' column", "text goes in .jsonl"):
        assert words in description, words
    error = _upload(client, auth, "d.xlsx", b"PK").json()["error"]
    assert ".jsonl" in error["message"] and set(error["detail"]["layouts"]) == {
        ".zip / .tar / .tar.gz / .tgz", ".npz", ".jsonl", ".csv"}
