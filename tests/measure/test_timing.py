"""The measurement kit's clocks and timing: CPU here, CUDA events and graphs where a GPU is."""

import time

import pytest
import torch

from edged.measure.clocks import capture_graph, device_sync, no_sync, wall_clock_ms
from edged.measure.energy import energy_per_item, gpu_power_source
from edged.measure.latency import LatencyStats, latency_metrics, measure_latency
from edged.measure.timing import percentiles, time_cpu, time_cuda


def test_wall_clock_synchronises_before_each_clock_read():
    events = []
    times = wall_clock_ms(lambda: events.append("call"), 3, sync=lambda: events.append("sync"))
    assert len(times) == 3 and all(t >= 0 for t in times)
    assert events == ["sync", "call", "sync"] * 3


def test_cpu_needs_no_sync_and_cuda_does():
    assert device_sync("cpu") is no_sync
    assert device_sync("cuda:0") is not no_sync


def test_percentiles_of_known_times():
    p50, p95, p99, mean = percentiles([float(v) for v in range(1, 101)])  # 1 .. 100 ms
    assert (p50, mean) == (50.5, 50.5)
    assert p95 == pytest.approx(95.05) and p99 == pytest.approx(99.01)


def test_cpu_timing_reflects_the_call_time():
    timing = time_cpu(lambda: time.sleep(0.002), batch=4, warmup=1, iters=10)
    assert 2.0 <= timing.p50_ms <= timing.p95_ms <= timing.p99_ms and timing.p50_ms < 20.0
    assert timing.items_per_s == pytest.approx(4 * 1000.0 / timing.mean_ms)
    assert timing.iters == 10 and not timing.cuda_graph
    assert set(timing.as_dict()) == {"p50_ms", "p95_ms", "p99_ms", "mean_ms", "items_per_s", "iters", "cuda_graph"}


def test_latency_metrics_shape_is_what_the_dashboard_reads():
    stats = measure_latency(lambda x: x, [1], warmup=0, iters=3)
    metrics = latency_metrics(dense=stats)
    assert list(metrics) == ["latency"] and list(metrics["latency"]) == ["dense"]
    assert metrics["latency"]["dense"] == stats.as_dict()
    assert set(stats.as_dict()) == set(LatencyStats.__dataclass_fields__)
    assert stats.device == "cpu" and stats.energy_method is None


def test_energy_is_optional():
    assert energy_per_item(lambda: None, 1, None) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without a GPU power source")
def test_no_gpu_power_source_says_why():
    source, why = gpu_power_source()
    assert source is None and why


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_events_cover_the_kernels_and_graphs_replay_them():
    a = torch.randn(4096, 4096, device="cuda")
    eager = time_cuda(lambda: a @ a, batch=1, warmup=3, iters=10)
    graphed = time_cuda(lambda: a @ a, batch=1, warmup=3, iters=10, cuda_graph=True, repeat=2)
    # 4096^3 * 2 FLOP = 137 GFLOP: no GPU does that in under 0.05 ms, so launch-only timing fails
    assert eager.p50_ms > 0.05 and graphed.p50_ms > 0.05 and graphed.cuda_graph
    x = torch.randn(64, 64, device="cuda")
    graph, out = capture_graph(lambda: x * 2)
    x.fill_(3.0)
    graph.replay()
    torch.cuda.synchronize()
    assert bool((out == 6.0).all())
