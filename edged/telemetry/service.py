"""Starting the daemon's sampler from Settings (called from the API's lifespan)."""

from __future__ import annotations

from typing import Any

from edged.telemetry.config import TelemetryConfig
from edged.telemetry.sampler import RunningJob, Sampler
from edged.telemetry.sources import open_power_source


def start_sampler(settings: Any, running_job: RunningJob) -> Sampler:
    """Open the configured power source and start sampling into settings.db_path, tagging each sample
    with `running_job(db)`."""
    config = TelemetryConfig.from_settings(settings)
    sampler = Sampler(settings.db_path, open_power_source(config), config, running_job)
    sampler.start()
    return sampler
