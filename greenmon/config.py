"""The config schema: each section's checks (its settings and defaults: settings.py), and loading from TOML.

Validation happens here, at load time; everything after loading can trust
the values. Errors are ConfigError with file, line and key in the message.
Parsing needs no network: the discovery entries become Sources, loaded
later by ``discovery.loading`` (start-up, ``--once``) or ``discovery.live``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import tomllib

from greenmon.auth import AuthSource, OAuth2Source, auth_type, parse_auth
from greenmon.certfiles import ca_file
from greenmon.discovery import sources as discovery
from greenmon.flows import check_flow_interval, parse_flow
from greenmon.oauth2 import parse_oauth2
from greenmon.schema import (SECRET_MASK, ConfigError, Document, boolean, buckets, choice, integer,
                             interpolate, interpolated_values, open_fraction,
                             file_path, header_value, listen_address, location_name, number,
                             optional_file)
from greenmon.settings import (ADDRESS_MODES, IP_VERSIONS, BreakerSettings, MetricsSettings,
                               MonitorSettings, RetrySettings, ServerSettings)
from greenmon.targets import (Target, check_address_choice, check_client_cert_pair, first_clash,
                              fit_timeout, parse_target, proxy_url)

DEFAULT_CONFIG_PATH = "greenmon.toml"
CONFIG_ENV = "GREENMON_CONFIG"
_SECTION_CHECKS = {
    "monitor": (MonitorSettings, {
        "concurrency": integer(1), "timeout": number(above=0), "interval": number(above=0),
        "location": location_name, "max_body_bytes": integer(1), "verify_tls": boolean,
        "ca_file": ca_file,
        "follow_redirects": boolean, "user_agent": header_value, "slo_p95_seconds": number(above=0),
        "state_file": file_path, "min_cert_days": number(at_least=0),
        "slo_availability": open_fraction, "slo_window_days": number(above=0), "history": integer(1),
        "degraded_latency": number(at_least=0), "addresses": choice(*ADDRESS_MODES),
        "ip_version": choice(*IP_VERSIONS),
        "proxy": proxy_url, "proxy_env": boolean, "client_cert": optional_file,
        "client_key": optional_file,
    }),
    "retry": (RetrySettings, {
        "retries": integer(0), "backoff": number(at_least=0), "max_backoff": number(at_least=0),
        "jitter": boolean,
    }),
    "breaker": (BreakerSettings, {
        "failure_threshold": integer(1), "recovery_timeout": number(above=0),
    }),
    "server": (ServerSettings, {"listen": listen_address, "web_config_file": optional_file}),
    "metrics": (MetricsSettings, {"buckets": buckets, "per_target_histograms": boolean,
                                  "phase_gauges": boolean, "all_error_classes": boolean}),
}
_TOP_LEVEL = set(_SECTION_CHECKS) | {"auth", "targets"} | set(discovery.SOURCE_KINDS)


@dataclass(frozen=True)
class Config:
    monitor: MonitorSettings = MonitorSettings()
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    server: ServerSettings = ServerSettings()
    metrics: MetricsSettings = MetricsSettings()
    auth: Mapping[str, AuthSource | OAuth2Source] = field(default_factory=dict)
    targets: tuple[Target, ...] = ()
    source: str = "<defaults>"
    # Discovery: the [[openapi]] and [[file_sd]] entries, the [[targets]] list as written, and
    # the last good load of each source (by Source.key); ``targets`` is the merge of them all.
    sources: tuple = ()
    static_targets: tuple[Target, ...] = ()
    discovered: Mapping[str, Any] = field(default_factory=dict)
    shard: tuple[int, int] = (0, 1)  # --shard I/N: this instance checks shard I of N
    # The timeouts left unset that were fitted to a shorter interval ("monitor.timeout 5 s"),
    # as Prometheus fits scrape_timeout: --check-config says so.
    fitted_timeouts: tuple[str, ...] = ()
    # The file as written: errors found after parsing (a source that cannot be loaded, names
    # that clash once discovered) name their line too.
    document: Document | None = field(default=None, compare=False, repr=False)

    @property
    def longest_timeout(self) -> float:
        """The longest deadline any enabled target's attempt may run for."""
        timeouts = [t.timeout for t in self.enabled_targets if t.timeout]
        return max(timeouts + [self.monitor.timeout])

    @property
    def longest_interval(self) -> float:
        """The longest interval of any enabled target: one daemon "sweep" is a pass of it."""
        return max([t.interval for t in self.enabled_targets if t.interval] + [self.monitor.interval])

    @property
    def label_names(self) -> tuple[str, ...]:
        """Every label name the enabled targets use, sorted: greenmon_target_info has them all
        (a worker process is told them, its share may use fewer)."""
        return tuple(sorted({name for t in self.enabled_targets for name in t.labels}))

    def only_shard(self, index: int, count: int) -> "Config":
        """The targets whose stable hash falls in shard ``index`` of ``count``."""
        mine = tuple(t for t in self.targets if t.shard_hash() % count == index)
        return dataclasses.replace(self, targets=mine, shard=(index, count))

    @functools.cached_property
    def enabled_targets(self) -> tuple[Target, ...]:
        """Computed once per Config (replace() makes a new one): callers ask for it often."""
        return tuple(t for t in self.targets if t.enabled)

    def replace(self, section: str | None = None, **changes: Any) -> "Config":
        """A copy with changes to the top level, or to one section (``replace("monitor", timeout=2)``)."""
        if section is None:
            return dataclasses.replace(self, **changes)
        updated = dataclasses.replace(getattr(self, section), **changes)
        return dataclasses.replace(self, **{section: updated})


_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")
_PATH_KEYS = {"ca_file", "state_file", "token_file", "password_file", "value_file",
              "client_secret_file", "web_config_file", "client_cert", "client_key", "body_file"}


def _resolve_paths(raw: dict, base_dir: str) -> None:
    """Make the file paths of [monitor], [auth.*], [[targets]] and the discovery entries
    (their target keys) relative to ``base_dir``."""
    tables = [raw.get("monitor"), raw.get("server")]
    tables += list(raw["auth"].values()) if isinstance(raw.get("auth"), dict) else []
    for kind in ("targets", *discovery.SOURCE_KINDS):
        tables += raw[kind] if isinstance(raw.get(kind), list) else []
    for table in tables:
        if not isinstance(table, dict):
            continue
        for key in _PATH_KEYS & table.keys():
            value = table[key]
            if isinstance(value, str) and value and not os.path.isabs(value):
                table[key] = os.path.join(base_dir, value)
    discovery.resolve_paths(raw, base_dir)


def _shown_urls(raw: dict, doc: Document) -> dict[int, tuple[str, list[str]]]:
    """Target URLs with a ${VAR} in them, as they may be shown (each value masked), and the
    values that must never be shown, by target index. A URL is where tokens end up
    (``?api_key=${KEY}``), and URLs are displayed everywhere."""
    shown = {}
    items = raw.get("targets")
    for index, item in enumerate(items if isinstance(items, list) else []):
        url = item.get("url") if isinstance(item, dict) else None
        if isinstance(url, str) and "${" in url:
            shown[index] = (interpolate(url, doc, ("targets", index, "url"), mask=SECRET_MASK),
                            interpolated_values(url))
    return shown


def config_path(explicit: str | None) -> str:
    """--config, else $GREENMON_CONFIG, else ./greenmon.toml."""
    return explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike, require_targets: bool = True) -> Config:
    """Read and validate a config file; raises ConfigError naming file, line and key.
    Its discovery sources are parsed, not loaded: ``targets`` holds only [[targets]] until
    ``discovery.loading.discover`` (or the daemon's live discovery) merges theirs."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config file: {error.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    return parse_config(text, path, require_targets=require_targets)


def parse_config(text: str, filename: str = "<string>", base_dir: str | None = None,
                 require_targets: bool = True) -> Config:
    """Validate TOML text; relative file paths in it are taken from ``base_dir``
    (default: the folder of ``filename``, as Prometheus does for its own config).
    ``require_targets``: a file without an enabled target is an error (False: its settings
    are what is asked for, as by ``--url``)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        position = _TOML_POSITION.search(str(error))
        where = f"{filename}:{position.group(1)}" if position else filename
        raise ConfigError(f"{where}: TOML syntax error: {error}") from None
    doc = Document.from_text(text, filename)
    shown_urls = _shown_urls(raw, doc)
    raw = interpolate(raw, doc)
    if base_dir is None and not filename.startswith("<"):
        base_dir = os.path.dirname(os.path.abspath(filename))
    if base_dir:
        _resolve_paths(raw, base_dir)
    for key in raw:
        if key not in _TOP_LEVEL:
            raise doc.error((key,), f"unknown key (known: {', '.join(sorted(_TOP_LEVEL))})")

    sections = {}
    for name, (cls, checks) in _SECTION_CHECKS.items():
        sections[name] = cls(**doc.read_table(raw.get(name, {}), (name,), checks))
    fitted: list[str] = []   # timeouts left unset and fitted to a shorter interval
    written = raw.get("monitor", {})
    timeout = fit_timeout(doc, ("monitor",), written.get("timeout"), written.get("interval"),
                          MonitorSettings.timeout, MonitorSettings.interval,
                          "the targets that use [monitor]'s")
    if timeout is not None:
        sections["monitor"] = dataclasses.replace(sections["monitor"], timeout=timeout)
        fitted.append(f"monitor.timeout {timeout:g} s")
    monitor = sections["monitor"]
    check_client_cert_pair(doc, ("monitor",), monitor.client_cert, monitor.client_key)
    check_address_choice(doc, None, Target(name="[monitor]", url=""), monitor)

    raw_auth = raw.get("auth", {})
    if not isinstance(raw_auth, dict):
        raise doc.error(("auth",), "must be a table of [auth.NAME] tables")
    auth = {}
    for name, table in raw_auth.items():
        kind = auth_type(doc, name, table)
        auth[name] = (parse_oauth2(doc, name, table, monitor) if kind == "oauth2" else
                      parse_auth(doc, name, table, kind))

    raw_targets = raw.get("targets", [])
    if not isinstance(raw_targets, list):
        raise doc.error(("targets",), "must be an array of [[targets]] tables")
    targets = [parse_flow(doc, item, i, auth) if isinstance(item, dict) and "steps" in item
               else parse_target(doc, item, i, auth, shown_urls.get(i)) for i, item in enumerate(raw_targets)]
    for i, target in enumerate(targets):
        if target.steps:
            check_flow_interval(doc, i, target, monitor)
        check_address_choice(doc, ("targets", i), target, monitor)
    for i, target in enumerate(targets):
        timeout = fit_timeout(doc, ("targets", i), target.timeout, target.interval,
                              monitor.timeout, monitor.interval, f"target {target.name!r}")
        if timeout is not None:
            targets[i] = dataclasses.replace(target, timeout=timeout)
            fitted.append(f"targets[{i}].timeout {timeout:g} s ({target.name!r})")
    targets = tuple(targets)
    clash = first_clash((target.name, i) for i, target in enumerate(targets))
    if clash is not None:
        name, first, second = clash
        raise doc.error(("targets", second, "name"), f"duplicate target name {name!r} (also targets[{first}])")
    sources = discovery.parse_sources(doc, raw, auth, monitor)
    fitted += [f"{source.label}.timeout {source.defaults['timeout']:g} s"
               for source in sources if discovery.timeout_fitted(source, raw)]
    config = Config(auth=auth, targets=targets, source=filename, sources=sources,
                    static_targets=targets, fitted_timeouts=tuple(fitted), document=doc, **sections)
    if require_targets and not sources and not config.enabled_targets:
        raise discovery.no_enabled_targets(doc, filename, sources)
    return config

