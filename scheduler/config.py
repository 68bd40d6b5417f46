"""Configuration: one TOML file plus ``CAPSCHED_*`` environment overrides.

Only the entry points (CLI, daemon) call :func:`load_config`; everything below them
receives the frozen value objects defined here.

Lookup order for the file: ``--config``, else ``$CAPSCHED_CONFIG``, else
``./capsched.toml``, else ``/etc/capsched/capsched.toml``.

Environment overrides:

* ``CAPSCHED_<SECTION>_<KEY>`` for the scalar keys of ``[database]``, ``[daemon]``,
  ``[ingest]`` and ``[log]`` (``CAPSCHED_DATABASE_URL``, ``CAPSCHED_DAEMON_REFIT_MINUTES``...).
* ``CAPSCHED_DEPLOYMENT__<NAME>__<KEY>`` for a deployment's key, and
  ``CAPSCHED_DEPLOYMENT__<NAME>__PRICING__<KEY>`` for its pricing; ``<NAME>`` is the
  deployment name upper-cased with every character outside ``A-Z0-9`` turned into ``_``.

Values from the environment are parsed as TOML scalars where possible (``5``, ``0.3``,
``true``), otherwise taken as strings.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATHS = (Path("capsched.toml"), Path("/etc/capsched/capsched.toml"))
ENV_PREFIX = "CAPSCHED_"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file, the deployment and the key."""


@dataclass(frozen=True)
class Pricing:
    """Prices of one deployment, in dollars (see docs/economics.md)."""

    elastic_unit_hour: float
    commit_7d_discount: float = 0.15
    commit_30d_discount: float = 0.30
    #: Dedicated (monthly) price per unit per 30 days; defaults to 720 elastic hours.
    dedicated_unit_month: float | None = None
    payg_input_per_mtok: float = 2.50
    payg_output_per_mtok: float = 10.00

    @property
    def dedicated_per_unit_month(self) -> float:
        if self.dedicated_unit_month is not None:
            return self.dedicated_unit_month
        return self.elastic_unit_hour * 720.0

    def commit_discount(self, term_days: int) -> float:
        if term_days == 7:
            return self.commit_7d_discount
        if term_days == 30:
            return self.commit_30d_discount
        raise ValueError(f"unsupported commitment term: {term_days} days")


@dataclass(frozen=True)
class CalendarEntry:
    """An exceptional local day: it behaves like another weekday and/or scales demand."""

    date: dt.date
    like: str | None = None
    multiplier: float = 1.0
    note: str = ""

    @property
    def like_weekday(self) -> int | None:
        """Monday=0 ... Sunday=6, or None when the day keeps its own weekday."""
        return None if self.like is None else WEEKDAYS.index(self.like)


@dataclass(frozen=True)
class PullSource:
    """A ``[[deployment.source]]``: where the daemon pulls this deployment's usage from.

    ``name`` is the usage source the minutes are stored under (default: the kind);
    ``options`` holds the kind's own keys (see :data:`SOURCE_KEYS`) as sorted pairs.
    """

    kind: str
    name: str
    #: Minutes before the high-water mark read again on every pull, to catch late points.
    trailing_minutes: int = 15
    #: Seconds between two pulls by the daemon.
    interval_seconds: int = 60
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)


#: Keys of each pull-source kind: name -> (type, required). Documented in README "Pull sources".
SOURCE_KEYS: dict[str, dict[str, tuple[type, bool]]] = {
    "cloudwatch": {"model_id": (str, True), "region": (str, False), "profile": (str, False),
                   "endpoint_url": (str, False), "namespace": (str, False),
                   "input_metric": (str, False), "output_metric": (str, False),
                   "requests_metric": (str, False), "dimension": (str, False)},
    "azure_monitor": {"resource_id": (str, True), "deployment_name": (str, False),
                      "input_metric": (str, False), "output_metric": (str, False),
                      "requests_metric": (str, False), "dimension": (str, False)},
    "prometheus": {"url": (str, True), "input_query": (str, True), "output_query": (str, True),
                   "requests_query": (str, True), "bearer_token_file": (str, False),
                   "timeout_seconds": (float, False)},
}
_SOURCE_COMMON = {"kind", "name", "trailing_minutes", "interval_seconds"}


@dataclass(frozen=True)
class Deployment:
    """One model served at one provider: the unit of planning."""

    name: str
    provider: str
    unit_tpm: float
    pricing: Pricing
    model: str = ""
    output_token_weight: float = 3.0
    min_units: int = 0
    max_units: int = 100
    scale_up_lead_minutes: int = 5
    min_hold_minutes: int = 60
    spill: str = "payg"
    max_spill_fraction: float = 0.01
    #: Dollars per hour above which meeting ``max_spill_fraction`` is reported, not chased
    #: (the planner holds the cheapest cover instead); 0 = dedicated at the recent peak.
    cost_ceiling_per_hour: float = 0.0
    timezone: str = "UTC"
    #: "live" sends actions to the provider; "shadow" journals them and logs the exact SDK
    #: call the adapter would make, sending nothing (scheduler/providers/shadow.py).
    mode: str = "live"
    #: Spend guard (scheduler/daemon/spend_guard.py), dollars; 0 = no guard. The most the
    #: deployment may cost per hour (elastic units plus active commitments) after a scale-up.
    max_hourly_spend: float = 0.0
    #: The most its commitments may still owe (active ones plus a new purchase).
    max_commitment_spend: float = 0.0
    calendar: tuple[CalendarEntry, ...] = ()
    source: tuple[PullSource, ...] = ()

    def demand_units(self, input_tokens: float, output_tokens: float) -> float:
        return (input_tokens + self.output_token_weight * output_tokens) / self.unit_tpm


@dataclass(frozen=True)
class DatabaseSettings:
    #: SQLAlchemy or libpq-style URL; None means "run the embedded PostgreSQL".
    url: str | None = None
    #: Where the embedded PostgreSQL keeps its data.
    data_dir: str = ""
    #: Usage older than this many days is dropped (whole monthly partitions).
    retention_days: int = 400
    pool_size: int = 5
    connect_timeout_seconds: int = 10


@dataclass(frozen=True)
class DaemonSettings:
    #: Ticks run at multiples of this many seconds (tests use a few seconds).
    tick_seconds: int = 60
    refit_minutes: int = 60
    #: Local time (HH:MM, in each deployment's timezone) of the daily commitment decision.
    commit_decision_time: str = "02:00"
    #: Past this many minutes without usage the daemon holds capacity.
    staleness_minutes: int = 10
    #: The most units one deployment's elastic target may change in one tick.
    max_change_per_tick: int = 50
    #: Optional monthly budget cap in dollars across all deployments (0 = none).
    monthly_budget: float = 0.0
    plan_horizon_minutes: int = 240
    history_days: int = 28
    #: host:port for the Prometheus endpoint; empty = off.
    metrics_address: str = ""
    #: host:port for the usage push endpoint; empty = off.
    ingest_address: str = ""
    #: Bearer token for the push endpoint; prefer the environment or a credential file.
    ingest_token: str = ""
    ingest_token_file: str = ""
    misfire_grace_seconds: int = 30
    #: Seconds a tick may spend on routine re-plans; past it they wait for the next tick
    #: (urgent ones never wait). Keeps a tick over 1,000 deployments near a second.
    replan_budget_seconds: float = 0.5
    provider_timeout_seconds: float = 10.0
    #: The longest provider ``Retry-After`` hint honoured (seconds); a longer one is cut to it.
    provider_max_retry_after_seconds: float = 3600.0
    #: After this many actions in a row that a provider answered "done" without changing
    #: its holdings (drift events), stop sending to that deployment, alert and hold (0 = never).
    drift_stop_after: int = 3


@dataclass(frozen=True)
class IngestSettings:
    default_source: str = "default"
    #: Treat a run of at least this many all-zero minutes as a logging gap (0 = never).
    zero_gap_minutes: int = 10
    #: ... but only while it is shorter than this: reported zeros that go on this long are
    #: load, and capacity follows them down to min_units (0 = zeros may be a gap forever).
    zero_load_after_minutes: int = 120
    #: A minute older than this many days before now is rejected (file:line:column).
    max_age_days: int = 3660
    #: A minute more than this many minutes after now is rejected (gateway clock skew).
    max_future_minutes: int = 1440
    #: One file (or push) may span at most this many days, first to last minute.
    max_span_days: int = 400
    #: A minute whose weighted tokens exceed plausibility_factor x max_units x unit_tpm of
    #: its deployment is rejected as implausible (0 = no ceiling).
    plausibility_factor: float = 1000.0


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"
    #: "auto" (JSON when stdout is not a terminal), "json" or "console".
    format: str = "auto"


@dataclass(frozen=True)
class PushTokenScope:
    """One push token (``[[push_token]]``) and what it may write (#10 item 16).

    The secret itself never lives in the config: it is read from the systemd credential
    ``push-token-<name>``, else ``token_file``, else ``CAPSCHED_PUSH_TOKEN_<NAME>``.
    """

    name: str
    #: Deployments the token may write usage for; ``"*"`` = every deployment.
    deployments: tuple[str, ...]
    #: Sources (``?source=``) it may report as; empty = any.
    sources: tuple[str, ...] = ()
    token_file: str = ""


@dataclass(frozen=True)
class Config:
    path: Path | None
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    log: LogSettings = field(default_factory=LogSettings)
    #: Settings per provider name, passed to the adapter as they are.
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    deployments: tuple[Deployment, ...] = ()
    #: Scoped push tokens ([[push_token]]), besides the all-deployments [daemon] ingest token.
    push_tokens: tuple[PushTokenScope, ...] = ()

    @functools.cached_property
    def _deployments_by_name(self) -> dict[str, Deployment]:
        return {deployment.name: deployment for deployment in self.deployments}

    def deployment(self, name: str) -> Deployment:
        found = self._deployments_by_name.get(name)
        if found is not None:
            return found
        known = ", ".join(d.name for d in self.deployments) or "none"
        raise ConfigError(f"{self.path}: unknown deployment {name!r} (known: {known})")


SECTIONS: dict[str, type[Any]] = {
    "database": DatabaseSettings,
    "daemon": DaemonSettings,
    "ingest": IngestSettings,
    "log": LogSettings,
}

_REQUIRED_DEPLOYMENT_KEYS = ("name", "provider", "unit_tpm")
_DEPLOYMENT_KEYS = {f.name for f in fields(Deployment)}
_PRICING_KEYS = {f.name for f in fields(Pricing)}
_CALENDAR_KEYS = {"date", "like", "multiplier", "note"}


def find_config_path(
    explicit: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> Path | None:
    if explicit:
        return Path(explicit)
    if env.get("CAPSCHED_CONFIG"):
        return Path(env["CAPSCHED_CONFIG"])
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.is_file():
            return candidate
    return None


def load_config(
    explicit: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read, override from the environment and validate the configuration."""
    env = os.environ if env is None else env
    path = find_config_path(explicit, env)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, path=path, env=env)


def parse_config(
    raw: Mapping[str, Any], *, path: Path | None = None, env: Mapping[str, str] | None = None
) -> Config:
    where = str(path) if path is not None else "<config>"
    raw = _apply_env(raw, env or {})
    unknown = set(raw) - set(SECTIONS) - {"deployment", "providers", "push_token"}
    if unknown:
        raise ConfigError(f"{where}: unknown section {sorted(unknown)[0]!r}")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        sections[name] = _build(cls, raw.get(name, {}), f"{where}: [{name}]")
    providers = raw.get("providers", {})
    if not isinstance(providers, dict):
        raise ConfigError(f"{where}: [providers] must be a table of provider settings")
    deployments_raw = raw.get("deployment", [])
    if not isinstance(deployments_raw, list):
        raise ConfigError(f"{where}: 'deployment' must be an array of tables ([[deployment]])")
    deployments = tuple(
        _parse_deployment(item, where, index) for index, item in enumerate(deployments_raw)
    )
    names = [d.name for d in deployments]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{where}: deployment {name!r} is declared twice")
    _validate_sections(sections, where)
    push_tokens = _parse_push_tokens(raw.get("push_token", []), where, set(names))
    return Config(path=path, providers=providers, deployments=deployments,
                  push_tokens=push_tokens, **sections)


def _parse_push_tokens(
    items: Any, where: str, deployments: set[str]
) -> tuple[PushTokenScope, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"{where}: 'push_token' must be an array of tables ([[push_token]])")
    scopes = []
    for index, item in enumerate(items):
        label = f"{where}: [[push_token]] #{index + 1}"
        if not isinstance(item, dict):
            raise ConfigError(f"{label} must be a table")
        unknown = sorted(set(item) - {"name", "deployments", "sources", "token_file"})
        if unknown:
            raise ConfigError(f"{label}: unknown key {unknown[0]!r} "
                              "(known: deployments, name, sources, token_file)")
        name = item.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ConfigError(f"{label}: key 'name' must be letters, digits, '.', '_', '-'")
        label = f"{where}: push_token {name!r}"
        lists = {}
        for key in ("deployments", "sources"):
            value = item.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{label}: key {key!r} must be a list of names")
            lists[key] = tuple(value)
        if not lists["deployments"]:
            raise ConfigError(f"{label}: key 'deployments' must name at least one deployment "
                              "(or \"*\" for all)")
        for deployment in lists["deployments"]:
            if deployment != "*" and deployment not in deployments:
                raise ConfigError(f"{label}: key 'deployments': no deployment {deployment!r}")
        token_file = item.get("token_file", "")
        if not isinstance(token_file, str):
            raise ConfigError(f"{label}: key 'token_file' must be a path")
        scopes.append(PushTokenScope(name, lists["deployments"], lists["sources"], token_file))
    if len({s.name for s in scopes}) != len(scopes):
        raise ConfigError(f"{where}: two [[push_token]] tables share a name")
    return tuple(scopes)


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_env(raw: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    merged: dict[str, Any] = {key: value for key, value in raw.items()}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            value = env.get(f"{ENV_PREFIX}{section.upper()}_{f.name.upper()}")
            if value is not None:
                table = dict(merged.get(section, {}))
                table[f.name] = value if f.name in _STRING_KEYS else _parse_env_value(value)
                merged[section] = table
    deployments = merged.get("deployment")
    if isinstance(deployments, list):
        patched = []
        for item in deployments:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                patched.append(item)
                continue
            item = dict(item)
            prefix = f"{ENV_PREFIX}DEPLOYMENT__{_env_name(item['name'])}__"
            for key, value in env.items():
                if not key.startswith(prefix):
                    continue
                rest = key[len(prefix) :].lower().split("__")
                if len(rest) == 2 and rest[0] == "pricing":
                    pricing = dict(item.get("pricing", {}))
                    pricing[rest[1]] = _parse_env_value(value)
                    item["pricing"] = pricing
                elif len(rest) == 1:
                    item[rest[0]] = value if rest[0] in _STRING_KEYS else _parse_env_value(value)
            patched.append(item)
        merged["deployment"] = patched
    return merged


# Keys whose environment value is always a string, even when it looks like a number.
_STRING_KEYS = {
    "url",
    "data_dir",
    "commit_decision_time",
    "metrics_address",
    "ingest_address",
    "ingest_token",
    "ingest_token_file",
    "default_source",
    "level",
    "format",
    "name",
    "provider",
    "model",
    "spill",
    "timezone",
    "mode",
}


def _check_type(value: Any, expected: Any, where: str, key: str) -> Any:
    """Accept ints for floats; reject bools for numbers and everything else that differs."""
    text = str(expected)
    if "float" in text and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = False
    if "float" in text and isinstance(value, float):
        ok = math.isfinite(value)
        if not ok:
            raise ConfigError(f"{where}: key {key!r} must be a finite number")
    if "int" in text and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if "str" in text and isinstance(value, str):
        ok = True
    if "bool" in text and isinstance(value, bool):
        ok = True
    if "None" in text and value is None:
        ok = True
    if not ok:
        wanted = text.replace(" | None", "").replace("None | ", "")
        raise ConfigError(
            f"{where}: key {key!r} must be of type {wanted}, got {type(value).__name__} {value!r}"
        )
    return value


def _checked(cls: type[Any], table: Any, where: str, skip: frozenset[str] = frozenset()
             ) -> dict[str, Any]:
    """``table``'s keys checked against ``cls``'s fields (names and types), minus ``skip``."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in skip:
            continue
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        values[key] = _check_type(value, known[key].type, where, key)
    return values


def _build(cls: type[Any], table: Any, where: str) -> Any:
    return cls(**_checked(cls, table, where))


def _parse_deployment(item: Any, where: str, index: int) -> Deployment:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: [[deployment]] #{index + 1} must be a table")
    name = item.get("name")
    label = (
        f"{where}: deployment {name!r}"
        if isinstance(name, str)
        else (f"{where}: [[deployment]] #{index + 1}")
    )
    for key in _REQUIRED_DEPLOYMENT_KEYS:
        if key not in item:
            raise ConfigError(f"{label}: missing required key {key!r}")
    unknown = set(item) - _DEPLOYMENT_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(
            f"{label}: unknown key {key!r} (known: {', '.join(sorted(_DEPLOYMENT_KEYS))})"
        )
    pricing_raw = item.get("pricing")
    if not isinstance(pricing_raw, dict) or "elastic_unit_hour" not in pricing_raw:
        raise ConfigError(f"{label}: missing required key 'pricing.elastic_unit_hour'")
    pricing = _build(Pricing, pricing_raw, f"{label} [pricing]")
    calendar_raw = item.get("calendar", [])
    if not isinstance(calendar_raw, list):
        raise ConfigError(f"{label}: key 'calendar' must be an array of tables")
    calendar = tuple(
        _parse_calendar(entry, f"{label} calendar #{i + 1}") for i, entry in enumerate(calendar_raw)
    )
    source_raw = item.get("source", [])
    if not isinstance(source_raw, list):
        raise ConfigError(f"{label}: key 'source' must be an array of tables "
                          "([[deployment.source]])")
    sources = tuple(
        _parse_source(entry, f"{label} source #{i + 1}") for i, entry in enumerate(source_raw)
    )
    if len({s.name for s in sources}) != len(sources):
        raise ConfigError(f"{label}: two sources share a name; give each a distinct 'name'")
    scalars = _checked(Deployment, item, label, skip=frozenset({"pricing", "calendar", "source"}))
    deployment = Deployment(pricing=pricing, calendar=calendar, source=sources, **scalars)
    if not deployment.model:
        deployment = replace(deployment, model=deployment.name)
    _validate_deployment(deployment, label)
    return deployment


def _parse_calendar(entry: Any, where: str) -> CalendarEntry:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(entry) - _CALENDAR_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    raw_date = entry.get("date")
    if isinstance(raw_date, str):
        try:
            raw_date = dt.date.fromisoformat(raw_date)
        except ValueError:
            raise ConfigError(f"{where}: key 'date' must be YYYY-MM-DD, got {raw_date!r}") from None
    if not isinstance(raw_date, dt.date) or isinstance(raw_date, dt.datetime):
        raise ConfigError(f"{where}: key 'date' must be a date (YYYY-MM-DD)")
    like = entry.get("like")
    if like is not None and (not isinstance(like, str) or like.lower() not in WEEKDAYS):
        raise ConfigError(f"{where}: key 'like' must be a weekday name, got {like!r}")
    multiplier = _check_type(entry.get("multiplier", 1.0), float, where, "multiplier")
    if multiplier < 0:
        raise ConfigError(f"{where}: key 'multiplier' must be >= 0")
    note = _check_type(entry.get("note", ""), str, where, "note")
    return CalendarEntry(
        date=raw_date, like=like.lower() if like else None, multiplier=multiplier, note=note
    )


def _parse_source(entry: Any, where: str) -> PullSource:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    kind = entry.get("kind")
    if kind not in SOURCE_KEYS:
        raise ConfigError(f"{where}: key 'kind' must be one of {', '.join(SOURCE_KEYS)}, "
                          f"got {kind!r}")
    keys = SOURCE_KEYS[kind]
    options = {}
    for key, value in entry.items():
        if key in _SOURCE_COMMON:
            continue
        if key not in keys:
            known = ", ".join(sorted(_SOURCE_COMMON | set(keys)))
            raise ConfigError(f"{where}: unknown key {key!r} for kind {kind!r} (known: {known})")
        options[key] = _check_type(value, keys[key][0].__name__, where, key)
    for key, (_, required) in keys.items():
        if required and not options.get(key):
            raise ConfigError(f"{where}: missing required key {key!r} for kind {kind!r}")
    name = _check_type(entry.get("name", kind), "str", where, "name")
    trailing = _check_type(entry.get("trailing_minutes", 15), "int", where, "trailing_minutes")
    interval = _check_type(entry.get("interval_seconds", 60), "int", where, "interval_seconds")
    if not name.strip():
        raise ConfigError(f"{where}: key 'name' must not be empty")
    if trailing < 0:
        raise ConfigError(f"{where}: key 'trailing_minutes' must be >= 0")
    if interval < 1:
        raise ConfigError(f"{where}: key 'interval_seconds' must be >= 1")
    return PullSource(kind=kind, name=name, trailing_minutes=trailing, interval_seconds=interval,
                      options=tuple(sorted(options.items())))


def _validate_deployment(d: Deployment, label: str) -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{label}: key {key!r} {why}")

    if not d.name.strip():
        raise bad("name", "must not be empty")
    if d.unit_tpm <= 0:
        raise bad("unit_tpm", "must be > 0")
    if d.output_token_weight < 0:
        raise bad("output_token_weight", "must be >= 0")
    if d.min_units < 0:
        raise bad("min_units", "must be >= 0")
    if d.max_units < d.min_units:
        raise bad("max_units", f"must be >= min_units ({d.min_units})")
    if d.scale_up_lead_minutes < 0:
        raise bad("scale_up_lead_minutes", "must be >= 0")
    if d.min_hold_minutes < 1:
        raise bad("min_hold_minutes", "must be >= 1")
    if d.spill not in ("payg", "throttle"):
        raise bad("spill", f"must be 'payg' or 'throttle', got {d.spill!r}")
    if not 0 <= d.max_spill_fraction <= 1:
        raise bad("max_spill_fraction", "must be between 0 and 1")
    if d.cost_ceiling_per_hour < 0:
        raise bad("cost_ceiling_per_hour", "must be >= 0 (0: dedicated at the recent peak)")
    if d.mode not in ("live", "shadow"):
        raise bad("mode", f"must be 'live' or 'shadow', got {d.mode!r}")
    for key in ("max_hourly_spend", "max_commitment_spend"):
        if getattr(d, key) < 0:
            raise bad(key, "must be >= 0 (0 = no guard)")
    try:
        zoneinfo.ZoneInfo(d.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise bad("timezone", f"must be an IANA time zone, got {d.timezone!r}") from None
    p = d.pricing
    if p.elastic_unit_hour <= 0:
        raise bad("pricing.elastic_unit_hour", "must be > 0")
    for key in ("commit_7d_discount", "commit_30d_discount"):
        if not 0 <= getattr(p, key) < 1:
            raise bad(f"pricing.{key}", "must be in [0, 1)")
    for key in ("dedicated_unit_month", "payg_input_per_mtok", "payg_output_per_mtok"):
        value = getattr(p, key)
        if value is not None and value < 0:
            raise bad(f"pricing.{key}", "must be >= 0")


def _validate_sections(sections: Mapping[str, Any], where: str) -> None:
    db: DatabaseSettings = sections["database"]
    daemon: DaemonSettings = sections["daemon"]
    log: LogSettings = sections["log"]
    if db.retention_days < 1:
        raise ConfigError(f"{where}: [database] key 'retention_days' must be >= 1")
    if db.pool_size < 1:
        raise ConfigError(f"{where}: [database] key 'pool_size' must be >= 1")
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", daemon.commit_decision_time):
        raise ConfigError(f"{where}: [daemon] key 'commit_decision_time' must be HH:MM")
    for key in (
        "refit_minutes",
        "staleness_minutes",
        "max_change_per_tick",
        "plan_horizon_minutes",
        "history_days",
    ):
        if getattr(daemon, key) < 1:
            raise ConfigError(f"{where}: [daemon] key {key!r} must be >= 1")
    if daemon.provider_max_retry_after_seconds <= 0:
        raise ConfigError(
            f"{where}: [daemon] key 'provider_max_retry_after_seconds' must be > 0")
    if daemon.drift_stop_after < 0:
        raise ConfigError(f"{where}: [daemon] key 'drift_stop_after' must be >= 0")
    if daemon.monthly_budget < 0:
        raise ConfigError(f"{where}: [daemon] key 'monthly_budget' must be >= 0")
    ingest: IngestSettings = sections["ingest"]
    for key in ("max_age_days", "max_future_minutes", "max_span_days"):
        if getattr(ingest, key) < 1:
            raise ConfigError(f"{where}: [ingest] key {key!r} must be >= 1")
    if ingest.plausibility_factor < 0:
        raise ConfigError(f"{where}: [ingest] key 'plausibility_factor' must be >= 0")
    if log.format not in ("auto", "json", "console"):
        raise ConfigError(f"{where}: [log] key 'format' must be auto, json or console")
    if log.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{where}: [log] key 'level' must be debug, info, warning or error")
