"""The worker process's environment: the daemon's, plus the daemon's telemetry settings as EDGED_*
variables.

The worker builds its own Settings (`get_settings()`, from the environment); a daemon configured
by an env file or by arguments would otherwise measure its job stages with a different power source
(or sysfs root) than its sampler. Only telemetry settings are passed: the token stays out.
"""

from __future__ import annotations

import os
from typing import Any

from edged.telemetry.config import SETTINGS_FIELDS


def worker_environment(settings: Any) -> dict[str, str]:
    """os.environ with EDGED_<NAME> set from every telemetry field `settings` has."""
    env = dict(os.environ)
    for attribute in SETTINGS_FIELDS.values():
        if hasattr(settings, attribute):
            env[f"EDGED_{attribute.upper()}"] = str(getattr(settings, attribute))
    return env
