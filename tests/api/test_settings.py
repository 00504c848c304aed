"""Settings: EDGED_ environment, env files, validation with clear messages, every field documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.errors import InvalidInput
from edged.settings import Settings, get_settings


def test_defaults(monkeypatch):
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"EDGED_{name.upper()}", raising=False)
    settings = get_settings()
    assert (settings.host, settings.port, settings.device, settings.token) == ("127.0.0.1", 8686, "auto", None)
    assert settings.sysfs_root == Path("/sys") and settings.db_path == settings.data_dir / "edged.db"


def test_environment_and_env_file(tmp_path, monkeypatch):
    env_file = tmp_path / "edged.env"
    env_file.write_text("EDGED_PORT=9001\nEDGED_TOKEN=from-the-env-file-123\nEDGED_LOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("EDGED_MAX_UPLOAD_MB", "5")
    settings = get_settings(env_file)
    assert settings.port == 9001 and settings.serving_token() == "from-the-env-file-123"
    assert settings.log_level == "debug" and settings.upload_limits().max_upload_bytes == 5 * 2**20
    monkeypatch.setenv("EDGED_ENV_FILE", str(env_file))
    monkeypatch.setenv("EDGED_PORT", "9002")  # the environment wins over the file
    assert get_settings().port == 9002


def test_missing_env_file_is_an_error(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        get_settings(tmp_path / "nope.env")


def test_invalid_values_name_every_variable(monkeypatch):
    monkeypatch.setenv("EDGED_PORT", "99999")
    monkeypatch.setenv("EDGED_DEVICE", "tpu")
    with pytest.raises(InvalidInput) as caught:
        get_settings()
    assert "EDGED_PORT" in caught.value.message and "EDGED_DEVICE" in caught.value.message


def test_short_token_is_refused_with_a_hint():
    with pytest.raises(InvalidInput, match="at least 16 characters.*secrets.token_urlsafe"):
        get_settings(token="short")


def test_missing_token_only_matters_for_serving():
    with pytest.raises(InvalidInput, match="EDGED_TOKEN is not set"):
        get_settings(token=None).serving_token()


def test_every_setting_is_documented():
    assert all(field.description for field in Settings.model_fields.values())


@pytest.mark.parametrize("token", ["a" * 16, " " * 16, "ab" * 12, "abcdefg" * 3, "secret token with spaces",
                                   "tab\tseparated-token-0123", "ünïcödé-tökén-0123456"])
def test_weak_or_unsendable_tokens_are_refused_with_how_to_make_one(token):
    with pytest.raises(InvalidInput, match="EDGED_TOKEN.*secrets.token_urlsafe"):
        get_settings(token=token)


def test_a_generated_token_is_accepted():
    import secrets

    token = secrets.token_urlsafe(32)
    assert get_settings(token=token).serving_token() == token


def test_model_factories_are_a_comma_separated_list_and_models_dir_defaults_into_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGED_MODEL_FACTORIES", " my_models.vision:make_cnn, my_models.audio ,")
    monkeypatch.delenv("EDGED_MODELS_DIR", raising=False)
    settings = get_settings(data_dir=tmp_path)
    assert settings.model_factories == ["my_models.vision:make_cnn", "my_models.audio"]
    assert settings.resolved_models_dir == tmp_path / "models"
    monkeypatch.delenv("EDGED_MODEL_FACTORIES")
    assert get_settings(models_dir="~/edged-models").resolved_models_dir == Path.home() / "edged-models"
    assert get_settings().model_factories == []
