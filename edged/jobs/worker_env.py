"""What the worker process is given: the daemon's Settings as a JSON file, and an environment without EDGED_*.

As uvicorn passes its one Config to its workers, the daemon writes the Settings it was built with
(environment, env file and arguments merged) to `settings.json` in the job's directory, and the worker
reads exactly that; it never re-reads EDGED_* variables or env files. The token is left out of the
file and every EDGED_* variable out of the environment: the worker runs user model code and needs
neither (it talks to SQLite, not to the API).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from edged.settings import Settings

SETTINGS_FILE = "settings.json"
WORKER_EXCLUDED = frozenset({"token"})  # settings the worker must not see


def write_worker_settings(settings: Settings, directory: Path) -> Path:
    """`directory`/settings.json holding `settings` without the token, readable by the owner only."""
    path = directory / SETTINGS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(settings.model_dump_json(exclude=set(WORKER_EXCLUDED)))
    return path


class _FileOnlySettings(Settings):
    """Settings whose only source is the values given: no environment, no env file."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the environment, env file and secrets directory are not read


def read_worker_settings(path: Path) -> Settings:
    """The Settings in `path`, as written: validated, and not merged with the environment."""
    return _FileOnlySettings(**json.loads(path.read_text()))


def worker_environment() -> dict[str, str]:
    """os.environ without any EDGED_* variable (the token among them)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("EDGED_")}
