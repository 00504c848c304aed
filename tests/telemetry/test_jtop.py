import os
import time

import pytest

from edged.errors import Unavailable
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.sources import jtop as jtop_source


def test_parse_maps_jtop_units_onto_a_reading():
    # The dictionaries' shapes and units are those of jetson-stats 4.x on an Orin (mW, kB, %, degC).
    power = {
        "rail": {"VDD_GPU_SOC": {"volt": 5000, "curr": 600, "power": 3000, "avg": 2900},
                 "VDD_CPU_CV": {"volt": 5000, "curr": 200, "power": 1000, "avg": 1100}},
        "tot": {"volt": 5000, "curr": 1500, "power": 7500, "avg": 7400, "name": "VDD_IN"},
    }
    stats = {"GPU": 42.0, "RAM": 0.31}
    memory = {"RAM": {"tot": 31_000_000, "used": 2_097_152}}
    temperature = {"cpu": {"temp": 51.5, "online": True}, "gpu": {"temp": 49.0, "online": True},
                   "cv0": {"temp": -256.0, "online": False}}
    reading = jtop_source.parse_jtop(power, stats, memory, temperature, t=123.0)
    assert reading.power_w == 7.5
    assert reading.rails == {"VDD_GPU_SOC": 3.0, "VDD_CPU_CV": 1.0}
    assert reading.gpu_util == 42.0
    assert reading.mem_used_mb == 2048.0
    assert reading.temp_c == 51.5
    assert reading.energy_j is None


def test_parse_with_nothing_reported_gives_nones():
    reading = jtop_source.parse_jtop({}, {}, {}, {}, t=1.0)
    assert (reading.power_w, reading.gpu_util, reading.mem_used_mb, reading.temp_c) == (None,) * 4
    assert reading.rails == {}


def _jtop_unavailable_reason() -> str:
    try:
        import jtop  # noqa: F401
    except ImportError:
        return "jetson-stats is not installed"
    if not os.path.exists(jtop_source.JTOP_SOCKET):
        return f"no jtop service socket at {jtop_source.JTOP_SOCKET}: not a Jetson"
    return ""


@pytest.mark.jetson
@pytest.mark.skipif(bool(_jtop_unavailable_reason()), reason=_jtop_unavailable_reason() or "n/a")
def test_real_jtop_reads_board_power():
    source = jtop_source.open_source(TelemetryConfig())
    try:
        time.sleep(1.2)  # two jtop intervals
        reading = source.read()
        assert reading.power_w is not None and reading.power_w > 0
        assert reading.rails
    finally:
        source.close()


def test_open_without_jtop_is_unavailable_with_reason():
    if not _jtop_unavailable_reason():
        pytest.skip("jtop is available here")
    with pytest.raises(Unavailable, match="jetson-stats|jtop service"):
        jtop_source.open_source(TelemetryConfig())
