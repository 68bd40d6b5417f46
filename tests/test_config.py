from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.config import ConfigError, load_config, parse_config

MINIMAL = """
[[deployment]]
name = "gpt4o-east"
provider = "simulated"
unit_tpm = 2500
[deployment.pricing]
elastic_unit_hour = 38.0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "capsched.toml"
    path.write_text(text)
    return path


def test_minimal_deployment_gets_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    (d,) = config.deployments
    assert d.model == "gpt4o-east"
    assert d.output_token_weight == 3.0
    assert d.pricing.commit_7d_discount == 0.15
    assert d.pricing.commit_30d_discount == 0.30
    assert d.pricing.dedicated_per_unit_month == pytest.approx(38.0 * 720)
    assert d.timezone == "UTC"
    assert d.spill == "payg"
    assert config.database.url is None


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ('colour = "blue"', "unknown key 'colour'"),
        ('min_units = "two"', "key 'min_units' must be of type int"),
        ("min_units = -1", "key 'min_units' must be >= 0"),
        ('spill = "drop"', "key 'spill' must be 'payg' or 'throttle'"),
        ("max_spill_fraction = 1.5", "key 'max_spill_fraction' must be between 0 and 1"),
        ('timezone = "Mars/Olympus"', "key 'timezone' must be an IANA time zone"),
        ("max_units = 1\nmin_units = 2", "key 'max_units' must be >= min_units"),
        ("min_hold_minutes = true", "key 'min_hold_minutes' must be of type int"),
    ],
)
def test_bad_deployment_key_names_file_deployment_and_key(
    tmp_path: Path, extra: str, fragment: str
) -> None:
    text = MINIMAL.replace("unit_tpm = 2500", f"unit_tpm = 2500\n{extra}")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert str(path) in message
    assert "deployment 'gpt4o-east'" in message
    assert fragment in message


def test_bad_pricing_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "commit_30d_discount = 1.2\n")
    with pytest.raises(ConfigError, match=r"'pricing.commit_30d_discount' must be in \[0, 1\)"):
        load_config(path, env={})


def test_missing_required_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing required key 'unit_tpm'"):
        load_config(write(tmp_path, MINIMAL.replace("unit_tpm = 2500\n", "")), env={})
    no_price = MINIMAL.replace("elastic_unit_hour = 38.0", "payg_input_per_mtok = 1.0")
    with pytest.raises(ConfigError, match=r"missing required key 'pricing\.elastic_unit_hour'"):
        load_config(write(tmp_path, no_price), env={})


def test_environment_overrides_sections_and_deployments(tmp_path: Path) -> None:
    env = {
        "CAPSCHED_DATABASE_URL": "postgresql://u@h:5432/d",
        "CAPSCHED_DAEMON_REFIT_MINUTES": "15",
        "CAPSCHED_DEPLOYMENT__GPT4O_EAST__MAX_UNITS": "7",
        "CAPSCHED_DEPLOYMENT__GPT4O_EAST__PRICING__COMMIT_7D_DISCOUNT": "0.2",
    }
    config = load_config(write(tmp_path, MINIMAL), env=env)
    assert config.database.url == "postgresql://u@h:5432/d"
    assert config.daemon.refit_minutes == 15
    assert config.deployments[0].max_units == 7
    assert config.deployments[0].pricing.commit_7d_discount == 0.2


def test_bad_environment_override_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="refit_minutes"):
        load_config(write(tmp_path, MINIMAL), env={"CAPSCHED_DAEMON_REFIT_MINUTES": "soon"})


def test_config_path_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_path = write(tmp_path, MINIMAL)
    monkeypatch.chdir(tmp_path)
    assert load_config(None, env={"CAPSCHED_CONFIG": str(env_path)}).path == env_path
    # ./capsched.toml is found when nothing else names a file
    assert load_config(None, env={}).path == Path("capsched.toml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_calendar_entries(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + """
[[deployment.calendar]]
date = 2026-12-25
like = "Sunday"
[[deployment.calendar]]
date = "2026-11-30"
multiplier = 1.8
note = "launch"
"""
    )
    (d,) = load_config(write(tmp_path, text), env={}).deployments
    assert d.calendar[0].like_weekday == 6
    assert d.calendar[1].multiplier == 1.8
    with pytest.raises(ConfigError, match="weekday name"):
        load_config(write(tmp_path, text.replace('"Sunday"', '"Funday"')), env={})


def test_duplicate_deployment_and_unknown_section() -> None:
    raw = {
        "deployment": [
            {
                "name": "a",
                "provider": "simulated",
                "unit_tpm": 1,
                "pricing": {"elastic_unit_hour": 1},
            },
            {
                "name": "a",
                "provider": "simulated",
                "unit_tpm": 1,
                "pricing": {"elastic_unit_hour": 1},
            },
        ]
    }
    with pytest.raises(ConfigError, match="declared twice"):
        parse_config(raw)
    with pytest.raises(ConfigError, match="unknown section 'databse'"):
        parse_config({"databse": {"url": "x"}})
