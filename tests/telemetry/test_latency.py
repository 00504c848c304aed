import time

import pytest
import torch

from edged.errors import InvalidInput
from edged.telemetry.config import TelemetryConfig
from edged.measure.latency import measure_latency
from edged.telemetry.sources import open_named_source


def test_percentiles_reflect_the_call_time():
    stats = measure_latency(lambda x: time.sleep(x), [0.002], warmup=1, iters=20)
    assert 2.0 <= stats.p50_ms <= stats.p95_ms <= stats.p99_ms
    assert stats.p50_ms < 20.0
    assert stats.throughput_per_s == pytest.approx(1000.0 / stats.mean_ms, rel=1e-6)
    assert stats.energy_per_inference_j is None


def test_inputs_cycle_and_batch_size_scales_throughput():
    seen = []
    stats = measure_latency(seen.append, ["a", "b", "c"], warmup=0, iters=7, batch_size=4)
    assert seen == list("abcabca")
    assert stats.throughput_per_s == pytest.approx(4 * 1000.0 / stats.mean_ms, rel=1e-6)


def test_runs_without_autograd():
    layer = torch.nn.Linear(16, 16)
    grads = []
    measure_latency(lambda x: grads.append(layer(x).requires_grad), [torch.randn(2, 16)], warmup=0, iters=3)
    assert grads == [False, False, False]


def test_energy_per_inference_from_a_counter(fake_rapl):
    fake_rapl.add_zone("intel-rapl:0", "package-0", 0)
    source = open_named_source("rapl", TelemetryConfig(sysfs_root=str(fake_rapl.root)))

    def infer(_):  # each call "costs" 3 mJ on the package counter
        fake_rapl.add_energy("intel-rapl:0", 3_000)

    stats = measure_latency(infer, [None], warmup=5, iters=50, power_source=source, batch_size=2)
    assert stats.energy_per_inference_j == pytest.approx(3e-3 / 2)
    assert stats.energy_method == "counter"


@pytest.mark.parametrize("kwargs", [{"inputs": []}, {"iters": 0}, {"warmup": -1}, {"batch_size": 0}])
def test_bad_arguments_are_rejected(kwargs):
    args = {"fn": print, "inputs": [1], "warmup": 0, "iters": 1, **kwargs}
    with pytest.raises(InvalidInput):
        measure_latency(**args)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_timing_covers_the_kernels():
    a = torch.randn(4096, 4096, device="cuda")
    stats = measure_latency(lambda x: x @ x, [a], warmup=3, iters=10, device="cuda")
    # 4096^3 * 2 FLOP = 137 GFLOP: no GPU does that in under 0.05 ms, so launch-only timing fails
    assert stats.p50_ms > 0.05
