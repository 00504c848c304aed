"""The task server's energy meter on real source objects over fake sysfs trees: a RAPL counter's difference is
taken as is, INA3221 power is integrated over the window, and without a source the joules are None, not 0."""

from __future__ import annotations

import time

import pytest

from fake_sysfs import FakeIna3221, FakeRapl
from edged.settings import get_settings
from edged.tasks.energy import InferenceEnergy
from suite_settings import TEST_TOKEN


def _energy(tmp_path, source: str) -> InferenceEnergy:
    settings = get_settings(data_dir=tmp_path / "data", token=TEST_TOKEN, power_source=source,
                            sysfs_root=tmp_path / "sys")
    return InferenceEnergy.from_settings(settings)


def test_a_counter_source_gives_the_counters_difference(tmp_path):
    rapl = FakeRapl(tmp_path / "sys")
    rapl.add_zone("intel-rapl:0", "package-0", energy_uj=5_000_000)
    rapl.add_zone("intel-rapl:1", "package-1", energy_uj=7_000_000)
    energy = _energy(tmp_path, "rapl")
    before = energy.start()
    rapl.add_energy("intel-rapl:0", 1_250_000)
    rapl.add_energy("intel-rapl:1", 250_000)
    assert energy.joules_since(before) == pytest.approx(1.5)  # both packages, microjoules to joules


def test_a_power_source_gives_power_times_the_window(tmp_path):
    board = FakeIna3221(tmp_path / "sys")
    board.add_board(FakeIna3221.ORIN_NX)
    watts = FakeIna3221.watts(FakeIna3221.ORIN_NX)["VDD_IN"]  # the board input rail, not the sum of the rails
    energy = _energy(tmp_path, "ina3221")
    before = energy.start()
    started = time.time()
    time.sleep(0.05)
    joules = energy.joules_since(before)
    assert joules == pytest.approx(watts * (time.time() - started), rel=0.2)


def test_no_source_measures_nothing_and_a_source_that_cannot_open_costs_only_the_energy(tmp_path):
    assert _energy(tmp_path, "none").joules_since(_energy(tmp_path, "none").start()) is None
    missing = _energy(tmp_path, "ina3221")  # named, but there is no tree: the sampler refuses it, the meter falls back
    assert missing.source.name == "none" and missing.joules_since(missing.start()) is None
