"""Power sources, energy integration, the latency harness and the SQLite telemetry sampler."""
