"""The ina3221 power source against fake Jetson sysfs trees (tests/fake_sysfs.py's FakeIna3221):
the Orin NX / Nano and AGX Orin layouts, discovery by chip name and rail label, W = mV * mA, files that
vanish, and its place in `auto`, in `edged doctor` and in a stage's energy."""

from __future__ import annotations

import time

import pytest

from edged.cli.doctor import diagnose
from edged.errors import Unavailable
from edged.settings import get_settings
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.energy import EnergyMeter
from edged.telemetry.sources import SOURCES, describe_power_source, ina3221, open_named_source, open_power_source


def _open(fake) -> ina3221.Ina3221Source:
    source = open_named_source("ina3221", TelemetryConfig(power_source="ina3221", sysfs_root=str(fake.root)))
    assert isinstance(source, ina3221.Ina3221Source)
    return source


def test_orin_nx_power_is_the_board_input_rail(fake_ina3221):
    fake_ina3221.add_board(fake_ina3221.ORIN_NX)
    reading = _open(fake_ina3221).read()
    expected = fake_ina3221.watts(fake_ina3221.ORIN_NX)
    assert reading.rails == pytest.approx(expected)
    assert reading.power_w == pytest.approx(5.072 * 1.420)  # VDD_IN alone: the other rails are inside it
    assert reading.energy_j is None and reading.t > 0


def test_agx_orin_power_is_the_sum_of_its_rails_over_both_chips(fake_ina3221):
    fake_ina3221.add_board(fake_ina3221.AGX_ORIN)
    source = _open(fake_ina3221)
    reading = source.read()
    expected = fake_ina3221.watts(fake_ina3221.AGX_ORIN)
    assert set(reading.rails) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}  # no NC, no in7 sum
    assert reading.rails == pytest.approx(expected)
    assert source.summed and reading.power_w == pytest.approx(sum(expected.values()))


@pytest.mark.parametrize("board", ["ORIN_NX", "AGX_ORIN"])
def test_the_cheap_total_is_the_same_power_as_a_full_reading(fake_ina3221, board):
    fake_ina3221.add_board(getattr(fake_ina3221, board))
    source = _open(fake_ina3221)
    total = source.read_total()  # per micro-batch of predictions: VDD_IN's two files where there is one
    assert total.power_w == pytest.approx(source.read().power_w)
    assert total.rails == ({} if board == "ORIN_NX" else pytest.approx(fake_ina3221.watts(fake_ina3221.AGX_ORIN)))
    fake_ina3221.set_current("VDD_IN" if board == "ORIN_NX" else "VDD_CPU_CV", 2000)
    assert source.read_total().power_w == pytest.approx(source.read().power_w)  # read now, not cached


def test_rails_are_found_by_chip_name_and_label_not_by_hwmon_index_or_channel(fake_ina3221):
    # another sensor first, with a label that looks like a rail: only chips named ina3221 count
    fake_ina3221.add_device(0, "tmp451", "1-004c", [("VDD_IN", 9999, 9999)])
    # the rails on other channels and a higher hwmon index than on a devkit
    fake_ina3221.add_device(7, "ina3221", "1-0040", [("VDD_SOC", 5000, 300), ("NC", 0, 0), ("VDD_IN", 5000, 2000)])
    reading = _open(fake_ina3221).read()
    assert reading.rails == pytest.approx({"VDD_SOC": 1.5, "VDD_IN": 10.0})
    assert reading.power_w == pytest.approx(10.0)


def test_power_is_volts_times_amps_as_the_files_change(fake_ina3221):
    fake_ina3221.add_board(fake_ina3221.ORIN_NX)
    source = _open(fake_ina3221)
    fake_ina3221.set_current("VDD_IN", 3000)
    fake_ina3221.channel_file("VDD_IN", "in").write_text("4990\n")
    assert source.read().power_w == pytest.approx(4.990 * 3.000)


def test_a_vanished_rail_reads_none_and_never_raises(fake_ina3221):
    fake_ina3221.add_board(fake_ina3221.ORIN_NX)
    source = _open(fake_ina3221)
    fake_ina3221.channel_file("VDD_SOC", "curr").unlink()
    reading = source.read()
    assert "VDD_SOC" not in reading.rails and reading.power_w == pytest.approx(5.072 * 1.420)
    fake_ina3221.channel_file("VDD_IN", "in").write_text("garbage\n")
    reading = source.read()
    assert reading.power_w is None and set(reading.rails) == {"VDD_CPU_GPU_CV"}


def test_a_summed_total_is_none_rather_than_short_a_rail(fake_ina3221):
    fake_ina3221.add_board(fake_ina3221.AGX_ORIN)
    source = _open(fake_ina3221)
    fake_ina3221.channel_file("VIN_SYS_5V0", "in").unlink()
    reading = source.read()
    assert reading.power_w is None and len(reading.rails) == 3


def test_unavailable_says_why(fake_ina3221, tmp_path):
    with pytest.raises(Unavailable, match="no hwmon directory"):
        ina3221.open_source(TelemetryConfig(sysfs_root=str(tmp_path / "empty")))
    fake_ina3221.add_device(0, "nvme", "0000:01:00.0", [("Composite", 0, 0)])
    config = TelemetryConfig(sysfs_root=str(fake_ina3221.root))
    with pytest.raises(Unavailable, match="no INA3221 power monitor"):
        ina3221.open_source(config)
    fake_ina3221.add_device(1, "ina3221", "1-0042", [("CARRIER_12V", 12000, 100), ("NC", 0, 0)])
    with pytest.raises(Unavailable, match="none of the known rails"):
        ina3221.open_source(config)


def test_unreadable_input_rail_is_unavailable(fake_ina3221):
    fake_ina3221.add_board(fake_ina3221.ORIN_NX)
    fake_ina3221.channel_file("VDD_IN", "curr").unlink()
    with pytest.raises(Unavailable, match="not readable"):
        ina3221.open_source(TelemetryConfig(sysfs_root=str(fake_ina3221.root)))


def test_auto_takes_ina3221_after_jtop_and_before_nvml(fake_ina3221):
    assert list(SOURCES)[:3] == ["jtop", "ina3221", "nvml"]
    fake_ina3221.add_board(fake_ina3221.ORIN_NX)
    config = TelemetryConfig(sysfs_root=str(fake_ina3221.root))
    report = describe_power_source(config)
    assert next(r for r in report["sources"] if r["name"] == "ina3221")["available"]
    jtop_present = next(r for r in report["sources"] if r["name"] == "jtop")["available"]
    expected = "jtop" if jtop_present else "ina3221"  # nvml, present or not, comes after
    assert report["selected"] == expected
    source = open_power_source(config)
    try:
        assert source.name == expected
    finally:
        source.close()


def test_doctor_lists_ina3221_and_why_not(fake_ina3221, tmp_path):
    fake_ina3221.add_board(fake_ina3221.AGX_ORIN)
    report = diagnose(get_settings(data_dir=tmp_path / "data", sysfs_root=fake_ina3221.root, power_source="ina3221"))
    power = report["power_source"]
    assert power["selected"] == "ina3221" and power["detail"] == "ina3221 -> ina3221"
    missing = diagnose(get_settings(data_dir=tmp_path / "data", sysfs_root=tmp_path / "empty"))["power_source"]
    row = next(s for s in missing["sources"] if s["name"] == "ina3221")
    assert not row["available"] and "no hwmon directory" in row["reason"]


def test_stage_energy_is_integrated_from_the_rails_as_the_current_steps(fake_ina3221):
    fake_ina3221.add_device(1, "ina3221", "1-0040", [("VDD_IN", 5000, 400)])  # 2 W
    source = _open(fake_ina3221)
    with EnergyMeter(source, interval_s=0.02) as meter:
        time.sleep(0.3)
        fake_ina3221.set_current("VDD_IN", 1200)  # 6 W from here on
        stepped_at = time.perf_counter()
        time.sleep(0.3)
    result = meter.result
    assert result.energy_method == "trapezoid" and result.samples >= 4
    # exact for each constant part; the step costs at most one sampling interval's worth either way
    after = time.perf_counter() - stepped_at
    before = result.seconds - after
    assert result.joules == pytest.approx(2.0 * before + 6.0 * after, abs=4.0 * 0.05 + 0.05)


def test_constant_board_power_gives_power_times_time(fake_ina3221):
    fake_ina3221.add_device(1, "ina3221", "1-0040", [("VDD_IN", 5000, 400)])
    source = _open(fake_ina3221)
    with EnergyMeter(source, interval_s=0.02) as meter:
        time.sleep(0.4)
    assert meter.result.joules == pytest.approx(2.0 * meter.result.seconds, rel=0.05, abs=0.01)
