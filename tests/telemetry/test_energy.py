import time

import pytest

from edged.telemetry.config import TelemetryConfig
from edged.telemetry.energy import EnergyIntegrator, EnergyMeter
from edged.telemetry.reading import PowerReading, PowerSource
from edged.telemetry.sources import open_named_source


def test_trapezoid_of_a_ramp_is_exact():
    integ = EnergyIntegrator()
    for t, w in [(0.0, 10.0), (1.0, 20.0), (3.0, 20.0)]:  # 15 J + 40 J
        integ.add(PowerReading(t=t, power_w=w))
    assert integ.joules == pytest.approx(55.0)
    assert integ.method == "trapezoid"


def test_counter_wins_over_power():
    integ = EnergyIntegrator()
    integ.add(PowerReading(t=0.0, power_w=100.0, energy_j=0.0))
    integ.add(PowerReading(t=1.0, power_w=100.0, energy_j=7.0))  # counter says 7 J, not 100 J
    assert integ.joules == pytest.approx(7.0) and integ.method == "counter"


def test_failed_reads_in_between_lose_no_energy():
    counter = EnergyIntegrator()
    for r in [PowerReading(t=0.0, energy_j=1.0), PowerReading(t=1.0), PowerReading(t=2.0, energy_j=6.0)]:
        counter.add(r)
    assert counter.joules == pytest.approx(5.0)
    sampled = EnergyIntegrator()
    for r in [PowerReading(t=0.0, power_w=10.0), PowerReading(t=1.0), PowerReading(t=2.0, power_w=10.0)]:
        sampled.add(r)
    assert sampled.joules == pytest.approx(20.0) and sampled.method == "trapezoid"


def test_power_after_the_counter_stops_is_integrated_once():
    integ = EnergyIntegrator()
    integ.add(PowerReading(t=0.0, power_w=2.0, energy_j=0.0))
    integ.add(PowerReading(t=1.0, power_w=2.0, energy_j=3.0))
    integ.add(PowerReading(t=2.0, power_w=4.0))  # counter gone: trapezoid from t=1 only
    assert integ.joules == pytest.approx(3.0 + 3.0) and integ.method == "mixed"


def test_no_power_means_no_joules():
    integ = EnergyIntegrator()
    integ.add(PowerReading(t=0.0))
    integ.add(PowerReading(t=1.0))
    assert integ.joules is None and integ.method is None


def test_meter_around_a_stage_reads_the_counter_and_memory(fake_rapl):
    fake_rapl.add_zone("intel-rapl:0", "package-0", 123)
    source = open_named_source("rapl", TelemetryConfig(sysfs_root=str(fake_rapl.root)))
    with EnergyMeter(source, interval_s=0.05) as meter:
        block = bytearray(64 * 2**20)  # touch 64 MiB so the stage has a visible memory peak
        block[:: 4096] = b"x" * len(block[:: 4096])
        time.sleep(0.3)
        fake_rapl.add_energy("intel-rapl:0", 2_500_000)
    result = meter.result
    assert result.joules == pytest.approx(2.5)
    assert result.energy_method == "counter"
    assert 0.3 <= result.seconds < 10.0  # at least the sleep; a loaded CI box may take longer
    assert result.samples >= 4
    if result.peak_host_mb is not None:
        assert result.peak_host_mb > 64
    assert result.peak_gpu_mb is None or result.peak_gpu_mb >= 0


def test_meter_without_power_still_times_the_stage():
    with EnergyMeter(PowerSource(), interval_s=0.05) as meter:
        time.sleep(0.1)
    assert meter.result.joules is None
    assert meter.result.seconds >= 0.1


def test_meter_sets_a_result_when_the_stage_raises():
    meter = EnergyMeter(PowerSource(), interval_s=0.05)
    with pytest.raises(ValueError):
        with meter:
            raise ValueError("stage failed")
    assert meter.result is not None and meter.result.seconds >= 0
