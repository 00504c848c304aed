"""edged's settings: environment variables with the `EDGED_` prefix, optionally from an env file.

Built by `get_settings()` (never at import) and passed explicitly to `create_app(settings)`, so tests
build their own. Every field is documented; `edged serve --help` and the README list them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from edged.data.upload_limits import UploadLimits
from edged.errors import InvalidInput

MIN_TOKEN_LENGTH = 16
MIN_TOKEN_DISTINCT = 8  # distinct characters: 16 x 'a' or 'abababab...' guess in seconds
TOKEN_HINT = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGED_", extra="ignore")

    data_dir: Path = Field(Path("edged-data"), description="Directory holding the SQLite database and the blobs.")
    host: str = Field("127.0.0.1", description="Address `edged serve` listens on.")
    port: int = Field(8686, ge=1, le=65535, description="TCP port `edged serve` listens on.")
    token: Optional[SecretStr] = Field(
        None,
        description=f"Bearer token every request but GET /healthz must carry; required to serve, "
        f">= {MIN_TOKEN_LENGTH} printable non-space ASCII characters, >= {MIN_TOKEN_DISTINCT} of them distinct.",
    )
    model_factories: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated `module:factory` specs, or module names (allowing every factory of the module "
        "and its submodules), that a job's `model` may name; empty: only registered models and model directories.",
    )
    models_dir: Optional[Path] = Field(
        None,
        description="Directory a job's model files (transformers directories, factory weights) must be inside; "
        "default <data_dir>/models.",
    )
    max_upload_mb: float = Field(UploadLimits.max_upload_mb, gt=0, description="Largest accepted upload, in MiB.")
    max_unpacked_mb: float = Field(
        UploadLimits.max_unpacked_mb,
        gt=0,
        description="Most bytes a zip/tar/npz upload may decompress to, all members together, in MiB.",
    )
    max_archive_files: int = Field(
        int(UploadLimits.max_archive_files), gt=0, description="Most members a zip/tar upload may hold."
    )
    decode_memory_mb: float = Field(
        UploadLimits.decode_memory_mb,
        gt=0,
        description="Most memory one upload's decoding may hold at once (a member, decoded pixels, arrays, "
        "the dataset's tensors), checked from headers before allocating, in MiB (413 beyond).",
    )
    max_concurrent_decodes: int = Field(
        2, ge=1, description="Uploads decoded at once; more wait (peak decode memory is this x decode_memory_mb)."
    )
    decode_wait_s: float = Field(
        30.0, gt=0, description="Seconds an upload waits for a decode slot before 503 with Retry-After."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where jobs run: auto picks cuda if present.")
    default_memory_budget_mb: int = Field(
        2048, gt=0, description="Memory budget of a job that does not set memory_budget_mb, in MiB."
    )
    shutdown_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a graceful shutdown waits for open requests and the running job."
    )
    job_retention_days: float = Field(
        0.0,
        ge=0,
        description="Days a finished job (its row, events, work directory and artifacts) is kept after it ends; "
        "0 keeps every job. Applied at start-up and hourly between jobs.",
    )
    max_connections: int = Field(
        1000, ge=16, description="Most open HTTP connections; a new one beyond it closes the longest-idle one "
        "(no request in progress), and requests beyond it while all are busy get 503. Lowered to fit the "
        "open-file limit.",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a connection may take to send a complete request head (after "
        "connecting, or after its previous response); then it is closed (408 if it sent part of one).",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="Seconds a request body may stall (no bytes) before the declared length "
        "arrives; then 408 and the connection is closed.",
    )
    keep_alive_timeout_s: int = Field(
        5, ge=1, description="Seconds an idle keep-alive connection stays open between requests."
    )
    tls_certfile: Optional[Path] = Field(
        None, description="PEM certificate (chain) to serve HTTPS with; needs EDGED_TLS_KEYFILE."
    )
    tls_keyfile: Optional[Path] = Field(None, description="PEM private key of EDGED_TLS_CERTFILE.")
    allow_plaintext: bool = Field(
        False, description="Serve plain HTTP on a non-loopback EDGED_HOST (only behind a TLS proxy or on an "
        "isolated network: the bearer token travels in clear).",
    )
    worker_nice: int = Field(
        10, ge=0, le=19, description="Niceness added to the job worker process, so the API keeps answering "
        "while a job trains on the same cores (0: same priority as the daemon).",
    )
    worker_threads: int = Field(
        0, ge=0, description="CPU threads torch uses in the job worker; 0: one fewer than the cores (at "
        "least one), leaving a core for the API.",
    )
    predict_threads: int = Field(
        1, ge=1, description="CPU threads torch uses for predictions in the daemon (the job worker has its own).",
    )
    predict_batch_limit: int = Field(
        32, ge=1, le=4096, description="Most samples one micro-batch of predictions on a task gathers.",
    )
    predict_max_wait_ms: float = Field(
        5.0, ge=0.0, le=1000.0, description="Longest a prediction waits for others of its task to share its batch "
        "(only while the batch has fewer requests than the task's previous one: a lone client never waits).",
    )
    task_cache_mb: float = Field(
        256.0, gt=0.0, description="Task deltas kept parsed on the serving device (LRU beyond this), in MiB.",
    )
    compiled_cache_mb: float = Field(
        512.0, gt=0.0, description="Tasks' compiled artifacts kept loaded for predictions (onnxruntime sessions, "
        "TensorRT engines; counted by artifact size, LRU beyond this), in MiB.",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Logging level of the daemon."
    )
    sysfs_root: Path = Field(Path("/sys"), description="Root of the sysfs tree power sensors are read from.")
    power_source: Literal["auto", "jtop", "ina3221", "nvml", "rapl", "none"] = Field(
        "auto", description="Power source for telemetry: auto picks the first present of jtop, ina3221, nvml, rapl."
    )
    telemetry_interval_s: float = Field(
        1.0, ge=0.5, description="Seconds between telemetry samples (>= 0.5: jtop samples no faster)."
    )
    telemetry_retention_rows: int = Field(
        100_000, gt=0, description="Telemetry rows kept; the oldest are pruned beyond this."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lowercase_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("token")
    @classmethod
    def _token_strong_enough(cls, value: Optional[SecretStr]) -> Optional[SecretStr]:
        if value is not None:
            problem = token_weakness(value.get_secret_value())
            if problem:
                raise ValueError(f"EDGED_TOKEN {problem}; {TOKEN_HINT}")
        return value

    @field_validator("model_factories", mode="before")
    @classmethod
    def _split_factories(cls, value: Any) -> Any:
        # Operators write a comma-separated list; blanks (a trailing comma) are dropped.
        items = value.split(",") if isinstance(value, str) else value
        return [item.strip() for item in items if isinstance(item, str) and item.strip()] if items else []

    @field_validator("models_dir")
    @classmethod
    def _expand_models_dir(cls, value: Optional[Path]) -> Optional[Path]:
        return value.expanduser() if value is not None else None  # the operator's own path: ~ is theirs

    @property
    def db_path(self) -> Path:
        return self.data_dir / "edged.db"

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"

    def upload_limits(self) -> UploadLimits:
        return UploadLimits(self.max_upload_mb, self.max_unpacked_mb, self.max_archive_files, self.decode_memory_mb)

    def serving_token(self) -> str:
        """The bearer token, or InvalidInput explaining how to set one (serving needs it)."""
        if self.token is None:
            raise InvalidInput(f"EDGED_TOKEN is not set; edged serves only with a bearer token; {TOKEN_HINT}")
        return self.token.get_secret_value()


def token_weakness(token: str) -> Optional[str]:
    """Why `token` is too easy to guess or to send, or None when it will do."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"must be at least {MIN_TOKEN_LENGTH} characters (it has {len(token)})"
    if any(not ("!" <= char <= "~") for char in token):
        return "must be printable ASCII without spaces or other whitespace (it goes in an HTTP header)"
    if len(set(token)) < MIN_TOKEN_DISTINCT:
        return (f"must have at least {MIN_TOKEN_DISTINCT} distinct characters (it has {len(set(token))}): "
                "a repeated character or pattern is guessed at once")
    return None


def get_settings(env_file: Optional[Path] = None, **overrides: Any) -> Settings:
    """Settings from the environment, an env file (argument, else EDGED_ENV_FILE) and overrides.

    Precedence: overrides > environment > env file > defaults. Raises InvalidInput naming every bad value.
    """
    env_file = env_file or (Path(os.environ["EDGED_ENV_FILE"]) if os.environ.get("EDGED_ENV_FILE") else None)
    if env_file is not None and not env_file.is_file():
        raise InvalidInput(f"env file {env_file} does not exist or is not a file")
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = [f"EDGED_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()]
        raise InvalidInput("invalid settings: " + "; ".join(problems), detail=problems) from None
