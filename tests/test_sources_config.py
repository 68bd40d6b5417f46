"""[[deployment.source]] parsing: kinds, keys, defaults, and errors naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.config import ConfigError, PullSource
from tests.sources_support import source_config

PROM = {"kind": "prometheus", "url": "http://prom:9090", "input_query": "a_total",
        "output_query": "b_total", "requests_query": "c_total"}


def test_defaults_and_options() -> None:
    source = source_config(PROM).deployments[0].source[0]
    assert source == PullSource(kind="prometheus", name="prometheus", trailing_minutes=15,
                                interval_seconds=60, options=tuple(sorted(
                                    (k, v) for k, v in PROM.items() if k != "kind")))
    assert source.option("url") == "http://prom:9090" and source.option("nope", 3) == 3
    cw = source_config({"kind": "cloudwatch", "model_id": "m", "name": "bedrock-us",
                        "trailing_minutes": 30, "interval_seconds": 120}).deployments[0]
    assert (cw.source[0].name, cw.source[0].trailing_minutes) == ("bedrock-us", 30)
    assert source_config({**PROM, "timeout_seconds": 5}).deployments[0].source[0].option(
        "timeout_seconds") == 5.0


@pytest.mark.parametrize(("source", "message"), [
    ({"kind": "datadog"}, "source #1: key 'kind' must be one of cloudwatch, azure_monitor, "
                          "prometheus, got 'datadog'"),
    ({"kind": "cloudwatch"}, "missing required key 'model_id' for kind 'cloudwatch'"),
    ({"kind": "azure_monitor", "resource_id": "/x", "url": "y"},
     "unknown key 'url' for kind 'azure_monitor'"),
    ({**PROM, "trailing_minutes": -1}, "key 'trailing_minutes' must be >= 0"),
    ({**PROM, "interval_seconds": "often"}, "key 'interval_seconds' must be of type int"),
    ({**PROM, "url": 5}, "key 'url' must be of type str"),
])
def test_bad_sources_are_rejected_naming_the_deployment_and_key(
    source: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match="deployment 'bot'") as info:
        source_config(source)
    assert message in str(info.value)


def test_two_sources_need_distinct_names() -> None:
    from scheduler.config import parse_config

    with pytest.raises(ConfigError, match="two sources share a name"):
        parse_config({"deployment": [{
            "name": "bot", "provider": "simulated", "unit_tpm": 1,
            "pricing": {"elastic_unit_hour": 1.0}, "source": [PROM, PROM]}]})


def test_the_readme_source_examples_are_valid_config() -> None:
    """Each ```toml block of README's "Pulling usage" section parses as a deployment's
    [[deployment.source]] (commented keys aside), so the documented keys stay real."""
    import re
    import tomllib
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Pulling usage", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3
    kinds = []
    for block in blocks:
        (source,) = tomllib.loads(block)["deployment"]["source"]
        kinds.append(source_config(source).deployments[0].source[0].kind)
    assert kinds == ["cloudwatch", "azure_monitor", "prometheus"]
