"""Upload bombs against a real `edged serve` (its fixture lives with the job tests): each is refused from its
headers, or decoded within the decode memory budget, measured as the growth of the daemon's peak resident set
(VmHWM, reset before each upload)."""

from __future__ import annotations

import io
import struct
import threading
import zipfile
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from daemon import AUTH, Daemon

MiB = 1024 * 1024


def blank_png(width: int, height: int, first_pixel: int = 0) -> bytes:
    """A grayscale PNG of zeros (but its first pixel), built row by row: a few hundred KB for 144 M pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    rows = [packer.compress(b"\x00" + bytes([first_pixel]) + bytes(width - 1))]
    zero_row = bytes(width + 1)  # filter byte 0, then the row's pixels
    rows += [packer.compress(zero_row) for _ in range(height - 1)] + [packer.flush()]
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(rows)) + chunk(b"IEND", b"")


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def huge_npy_npz() -> bytes:
    """An .npz whose x.npy header declares 10^12 float64 values (8 TB) over 16 bytes of data."""
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(16)
    buffer = io.BytesIO()
    np.savez(buffer, y=np.array([0, 1]))
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("x.npy", npy)
    return buffer.getvalue()


class PeakRss:
    """The daemon's resident set: reset its peak (clear_refs 5), then read VmHWM above that baseline."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _kb(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")

    def reset(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.baseline_kb = self._kb("VmRSS")

    def growth_mb(self) -> float:
        return (self._kb("VmHWM") - self.baseline_kb) / 1024

    def now_mb(self) -> float:
        return (self._kb("VmRSS") - self.baseline_kb) / 1024


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    daemon = Daemon(tmp_path_factory.mktemp("bombs"))
    daemon.start()
    assert daemon.process is not None
    # a first upload warms the decoders' imports, so the baseline already holds them
    assert post(daemon, "warm.zip", zipped({"a/0.png": blank_png(8, 8), "b/0.png": blank_png(8, 8, 1)})).status_code == 201
    yield daemon, PeakRss(daemon.process.pid)
    daemon.stop(15)


def post(daemon: Daemon, filename: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{daemon.url}/v1/datasets", headers=AUTH, files={"file": (filename, data)}, timeout=120)


def dataset_count(daemon: Daemon) -> int:
    return len(daemon.get("/v1/datasets").json())


def measured(daemon, rss, filename: str, data: bytes) -> tuple[httpx.Response, float]:
    rss.reset()
    response = post(daemon, filename, data)
    return response, rss.growth_mb()


def test_zip_of_zeros_is_refused_at_its_first_member(daemon):
    daemon, rss = daemon
    bomb = zipped({f"c/{i}.png": bytes(MiB) for i in range(1000)})  # 1,000 MiB unpacked, under the limit
    assert len(bomb) < 1.2e6
    before = dataset_count(daemon)
    response, growth = measured(daemon, rss, "zeros.zip", bomb)
    print(f"zip of zeros: {response.status_code}, peak RSS growth {growth:.1f} MiB")
    assert response.status_code == 422 and "not a PNG or JPEG" in response.json()["error"]["message"]
    assert growth < 64 and dataset_count(daemon) == before


def test_pixel_bomb_is_refused_from_its_headers(daemon):
    daemon, rss = daemon
    bomb = zipped({"a/0.png": blank_png(12000, 12000), "b/0.png": blank_png(12000, 12000, 1)})
    assert len(bomb) < 1e6
    before = dataset_count(daemon)
    response, growth = measured(daemon, rss, "pixels.zip", bomb)
    print(f"pixel bomb: {response.status_code}, peak RSS growth {growth:.1f} MiB")
    error = response.json()["error"]
    assert response.status_code == 413 and error["detail"]["limit_decode_mb"] == 512
    assert "decode memory budget" in error["message"] and "EDGED_DECODE_MEMORY_MB" in error["message"]
    assert growth < 64 and dataset_count(daemon) == before  # nothing decoded, nothing stored


def test_huge_npy_shape_is_refused_from_its_header(daemon):
    daemon, rss = daemon
    response, growth = measured(daemon, rss, "huge.npz", huge_npy_npz())
    print(f"npy shape bomb: {response.status_code}, peak RSS growth {growth:.1f} MiB")
    assert response.status_code == 413 and "shape [1000000, 1000000]" in response.json()["error"]["message"]
    assert growth < 64


def large_images(seed: int) -> bytes:
    """Two 6000x6000 grayscale images: 72 MB of pixels, accepted within the 512 MiB decode budget."""
    return zipped({"a/0.png": blank_png(6000, 6000, seed), "b/0.png": blank_png(6000, 6000, seed + 1)})


def test_large_images_within_the_budget_are_accepted_and_memory_is_given_back(daemon):
    daemon, rss = daemon
    response, growth = measured(daemon, rss, "large.zip", large_images(10))
    left = rss.now_mb()
    print(f"2 x 6000x6000: {response.status_code}, peak RSS growth {growth:.1f} MiB, {left:.1f} MiB left after")
    assert response.status_code == 201 and response.json()["shape"] == [1, 6000, 6000]
    assert growth < 200 and left < 32  # 72 MB of pixels plus one image's decode (measured: ~140 MiB)


def test_four_concurrent_uploads_are_decoded_two_at_a_time(daemon):
    daemon, rss = daemon
    bodies = [large_images(20 + 2 * i) for i in range(4)]
    rss.reset()
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda b=b: statuses.append(post(daemon, "large.zip", b).status_code)) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    growth = rss.growth_mb()
    print(f"4 concurrent 2 x 6000x6000: {statuses}, peak RSS growth {growth:.1f} MiB")
    assert statuses == [201] * 4
    assert growth < 2 * 200  # two decodes at a time (EDGED_MAX_CONCURRENT_DECODES=2), not four
