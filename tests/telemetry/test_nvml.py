"""NVML through the real pynvml client: runs only where an NVIDIA driver and discrete GPU exist."""

import time

import pytest

from edged.errors import Unavailable
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.sources import nvml


def _open_or_reason():
    try:
        return nvml.open_source(TelemetryConfig()), ""
    except Unavailable as e:
        return None, e.message


@pytest.mark.gpu
def test_real_nvml_energy_counter_and_power():
    source, reason = _open_or_reason()
    if source is None:
        pytest.skip(f"NVML unavailable: {reason}")
    torch = pytest.importorskip("torch")
    try:
        first = source.read()
        if torch.cuda.is_available():
            a = torch.randn(4096, 4096, device="cuda")
            t_end = time.time() + 1.0
            while time.time() < t_end:
                a = a @ a
                a = a / a.norm()
            torch.cuda.synchronize()
        else:
            time.sleep(1.0)
        second = source.read()
        assert second.power_w is not None and second.power_w > 0
        assert second.rails and all(w > 0 for w in second.rails.values())
        assert second.temp_c is not None and 0 < second.temp_c < 120
        total = source.read_total()  # what each micro-batch of predictions reads
        assert total.power_w is not None and total.power_w > 0
        if source.has_energy_counter:
            assert second.energy_j > first.energy_j >= 0
            # 1 s at a plausible GPU draw: between 1 W and 1500 W
            assert 1.0 < (second.energy_j - first.energy_j) / (second.t - first.t) < 1500.0
    finally:
        source.close()


def test_device_spec_is_validated():
    from edged.errors import InvalidInput

    assert nvml._device_indices("all", 2) == [0, 1]
    assert nvml._device_indices("1", 2) == [1]
    with pytest.raises(InvalidInput, match="outside"):
        nvml._device_indices("3", 2)
    with pytest.raises(InvalidInput, match="comma-separated"):
        nvml._device_indices("gpu0", 2)


class RecordingNvml:
    """pynvml's calls that NvmlSource makes, recorded: which queries one reading costs."""

    class NVMLError(Exception):
        pass

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, failing: bool = False) -> None:
        self.calls: list[str] = []
        self.failing = failing

    def _call(self, name: str, value):
        self.calls.append(name)
        if self.failing:
            raise self.NVMLError("GPU is lost")
        return value

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self._call("energy", 1000 * (handle + 1))

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._call("power", 50_000)

    def nvmlDeviceGetUtilizationRates(self, handle):
        return self._call("util", type("Util", (), {"gpu": 10})())

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return self._call("temp", 40)


def test_a_predicts_reading_queries_only_the_power_of_each_gpu():
    driver = RecordingNvml()
    source = nvml.NvmlSource(driver, [0, 1], energy_supported=True)
    driver.calls.clear()
    total = source.read_total()  # the energy counter is the slow query (3.2 ms on an H100): not per batch
    assert driver.calls == ["power", "power"] and total.power_w == 100.0 and total.energy_j is None
    driver.calls.clear()
    full = source.read_power()  # the sampler's reading keeps every query
    assert sorted(set(driver.calls)) == ["energy", "power", "temp", "util"] and full.energy_j == 0.0


def test_a_failing_driver_gives_an_empty_reading_not_an_error():
    source = nvml.NvmlSource(RecordingNvml(), [0], energy_supported=True)
    source._nvml = RecordingNvml(failing=True)
    total = source.read_total()
    assert total.energy_j is None and total.power_w is None
