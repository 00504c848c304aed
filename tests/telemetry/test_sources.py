import pytest

from edged.errors import InvalidInput
from edged.telemetry.config import TelemetryConfig
from edged.telemetry.sources import SOURCES, describe_power_source, open_named_source, open_power_source


def test_unknown_source_name_lists_accepted_names():
    with pytest.raises(InvalidInput, match="auto, jtop, ina3221, nvml, rapl, none"):
        open_named_source("tegrastats", TelemetryConfig())


def test_auto_opens_what_describe_selects(tmp_path):
    config = TelemetryConfig(sysfs_root=str(tmp_path))
    report = describe_power_source(config)
    assert [r["name"] for r in report["sources"]] == list(SOURCES)
    assert all(r["reason"] for r in report["sources"])
    source = open_power_source(config)
    try:
        assert source.name == report["selected"]
    finally:
        source.close()


def test_auto_prefers_rapl_over_none_when_readable(fake_rapl):
    fake_rapl.add_zone("intel-rapl:0", "package-0", 0)
    config = TelemetryConfig(sysfs_root=str(fake_rapl.root))
    report = describe_power_source(config)
    rapl = next(r for r in report["sources"] if r["name"] == "rapl")
    assert rapl["available"]
    if not any(r["available"] for r in report["sources"] if r["name"] in ("jtop", "nvml")):
        assert report["selected"] == "rapl"


def test_explicit_unavailable_source_is_reported_not_selected(tmp_path):
    report = describe_power_source(TelemetryConfig(power_source="rapl", sysfs_root=str(tmp_path)))
    assert report["selected"] is None


@pytest.mark.parametrize("name", list(SOURCES))
def test_every_source_reads_without_raising_where_it_opens(name, fake_rapl, fake_ina3221):
    from edged.errors import Unavailable

    fake_rapl.add_zone("intel-rapl:0", "package-0", 0)
    fake_ina3221.add_board(fake_ina3221.ORIN_NX)  # the same sysfs root
    try:
        source = open_named_source(name, TelemetryConfig(sysfs_root=str(fake_rapl.root)))
    except Unavailable as e:
        pytest.skip(f"{name} unavailable here: {e.message}")
    try:
        reading = source.read()
        assert reading.t > 0
        assert reading.cpu_util is None or 0.0 <= reading.cpu_util <= 100.0
    finally:
        source.close()


def test_config_reads_settings_attributes_and_validates():
    class Settings:  # any object with the documented attribute names
        power_source = "none"
        telemetry_retention_rows = 10

    config = TelemetryConfig.from_settings(Settings())
    assert config.power_source == "none" and config.retention_rows == 10
    assert config.idle_interval_s == TelemetryConfig().idle_interval_s
    with pytest.raises(InvalidInput, match="retention"):
        TelemetryConfig(retention_rows=0)
