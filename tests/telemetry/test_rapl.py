import os
import time

import pytest

from edged.errors import Unavailable
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.sources import open_named_source, rapl


def _config(fake_rapl) -> TelemetryConfig:
    return TelemetryConfig(power_source="rapl", sysfs_root=str(fake_rapl.root))


def test_sums_package_zones_and_ignores_subzones(fake_rapl):
    fake_rapl.add_zone("intel-rapl:0", "package-0", 1_000_000)
    fake_rapl.add_zone("intel-rapl:1", "package-1", 5_000_000)
    fake_rapl.add_zone("intel-rapl:0:0", "core", 0)  # inside package-0 already: must not count twice
    source = open_named_source("rapl", _config(fake_rapl))
    fake_rapl.add_energy("intel-rapl:0", 2_000_000)
    fake_rapl.add_energy("intel-rapl:1", 3_000_000)
    fake_rapl.add_energy("intel-rapl:0:0", 9_000_000)
    reading = source.read()
    assert reading.energy_j == pytest.approx(5.0)
    assert set(reading.rails) == {"package-0", "package-1"}
    assert reading.power_w == pytest.approx(sum(reading.rails.values()))
    assert reading.rails["package-1"] / reading.rails["package-0"] == pytest.approx(1.5)


def test_counter_wrap_around_is_unwrapped(fake_rapl):
    max_range = 10_000_000
    fake_rapl.add_zone("intel-rapl:0", "package-0", max_range - 1_500_000, max_range_uj=max_range)
    source = open_named_source("rapl", _config(fake_rapl))
    fake_rapl.set_energy("intel-rapl:0", 500_000)  # wrapped: 1.5 J to the top, then 0.5 J
    assert source.read().energy_j == pytest.approx(2.0)
    fake_rapl.add_energy("intel-rapl:0", 9_800_000)  # 0.5 J + 9.8 J wraps again, to 0.3 J
    assert source.read().energy_j == pytest.approx(11.8)


def test_power_is_energy_over_the_interval(fake_rapl):
    fake_rapl.add_zone("intel-rapl:0", "package-0", 0)
    source = open_named_source("rapl", _config(fake_rapl))
    t_before = time.monotonic()
    source.read()
    time.sleep(0.2)
    fake_rapl.add_energy("intel-rapl:0", 4_000_000)  # 4 J
    reading = source.read()
    longest = time.monotonic() - t_before  # the source's interval lies between 0.2 s and this
    assert 4.0 / longest <= reading.power_w <= 4.0 / 0.2


def test_missing_tree_is_unavailable_with_reason(tmp_path):
    with pytest.raises(Unavailable, match="powercap"):
        rapl.open_source(TelemetryConfig(sysfs_root=str(tmp_path)))


def test_tree_without_package_zones_is_unavailable(fake_rapl):
    fake_rapl.powercap.mkdir(parents=True)
    (fake_rapl.powercap / "dtpm").mkdir()
    with pytest.raises(Unavailable, match="package zones"):
        rapl.open_source(_config(fake_rapl))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of their mode")
def test_unreadable_counter_is_unavailable(fake_rapl):
    zone = fake_rapl.add_zone("intel-rapl:0", "package-0", 0)
    (zone / "energy_uj").chmod(0o000)
    with pytest.raises(Unavailable, match="root-only"):
        rapl.open_source(_config(fake_rapl))


def test_read_never_raises_when_the_counter_vanishes(fake_rapl):
    zone = fake_rapl.add_zone("intel-rapl:0", "package-0", 0)
    source = open_named_source("rapl", _config(fake_rapl))
    (zone / "energy_uj").unlink()
    reading = source.read()
    assert reading.power_w is None and reading.energy_j is None
    assert reading.mem_used_mb is None or reading.mem_used_mb > 0
