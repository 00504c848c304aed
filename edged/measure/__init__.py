"""The measurement kit: how long a call takes and, optionally, how much energy it uses.

- `clocks`: the three clocks (host wall clock, CUDA events, CUDA-graph capture and replay), each
  returning milliseconds per call;
- `timing`: `time_cpu` / `time_cuda` -> `Timing` percentiles (the benches, the compile backend's kernel tuning);
- `latency`: `measure_latency` -> `LatencyStats` with energy per inference from a power source when
  one is given, and `latency_metrics`, the shape a job's metrics store it in (the benchmark stage);
- `energy`: joules per item over a fixed stretch of back-to-back calls, and the GPU power source for it.
"""
