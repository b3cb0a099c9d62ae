"""The configuration file: YAML text into frozen dataclasses, with defaults, strict keys and located errors.

Pure: no file is opened here. `parse` takes the text; the files the configuration names (certificates,
keys, tokens) are read and checked where they are used (tls.py) so that they can rotate. Each dataclass
keeps the lines its keys stand on (outside equality), so that later checks can locate their problems too.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml
from yarl import URL

from relay.errors import ConfigError, Problem
from relay.yamlnodes import NodeReader, in_line_order, yaml_problem

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_LINE_LENGTH_LIMIT = 1 << 20
DEFAULT_RELABEL_CACHE_SIZE = 600_000
INVALID_LINE_ACTIONS = ("fail", "drop")
UPSTREAM_NAME_RE = re.compile(r"[a-zA-Z0-9_-]+")
TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


def _position() -> Any:  # noqa: ANN401 - typed Any so that mypy takes the Field for a default of any type
    """A field for where things stand in the file: never compared, so that moving a key changes no setting."""
    return field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Prometheus' `tls_config`, paths already resolved against the configuration file's folder."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    min_version: ssl.TLSVersion | None = None
    lines: Mapping[str, int] = _position()
    """The line of each key given, and '' for the mapping itself."""
    written: Mapping[str, str] = _position()
    """Each path key's value as written, before it was resolved."""


@dataclass(frozen=True, slots=True)
class RelabelRuleSpec:
    """One `metric_relabel_configs` entry as written, Prometheus' defaults filled in."""

    location: str
    source_labels: tuple[str, ...] = ()
    separator: str = ";"
    regex: str = "(.*)"
    modulus: int = 0
    target_label: str = ""
    replacement: str = "$1"
    action: str = "replace"
    lines: Mapping[str, int] = _position()
    """The line of each key given, and '' for the rule itself."""

    def line_of(self, key: str) -> int | None:
        """The line a problem with `key` belongs on: the key's own, else (a key left out) the action's or
        the rule's."""
        key = key.split("[", 1)[0]  # source_labels[2] is on the line of source_labels
        for candidate in (key, "action", ""):
            if candidate in self.lines:
                return self.lines[candidate]
        return None


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One upstream to scrape and relay; see the configuration reference in README.md."""

    name: str
    url: str
    location: str
    params: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    tls_config: TLSConfig = field(default_factory=TLSConfig)
    bearer_token_file: Path | None = None
    metric_relabel_configs: tuple[RelabelRuleSpec, ...] = ()
    sample_limit: int = 0
    label_limit: int = 0
    label_name_length_limit: int = 0
    label_value_length_limit: int = 0
    body_size_limit: int = 0
    line_length_limit: int = DEFAULT_LINE_LENGTH_LIMIT
    relabel_cache_size: int = DEFAULT_RELABEL_CACHE_SIZE
    on_invalid_line: str = "fail"
    min_interval: float = 0.0
    failover_urls: tuple[str, ...] = ()
    """Further addresses of the same upstream, tried in order when the ones before cannot be reached."""
    lines: Mapping[str, int] = _position()
    """The line of each key given, and '' for the upstream itself."""
    written: Mapping[str, str] = _position()
    """bearer_token_file as written, before it was resolved."""

    def query_url(self, url: str | None = None) -> str:
        """The URL (or one of failover_urls) with `params` added to its query, as the request is sent
        (aiohttp extends it with yarl)."""
        url = self.url if url is None else url
        if not self.params:
            return url
        return str(URL(url).extend_query(self.params))

    @property
    def urls(self) -> tuple[str, ...]:
        """Every address of the upstream, in the order they are tried."""
        return (self.url, *self.failover_urls)

    def settings(self) -> UpstreamConfig:
        """This upstream without its place in the file: equal when only the order of upstreams changed."""
        rules = tuple(dataclasses.replace(rule, location="") for rule in self.metric_relabel_configs)
        return dataclasses.replace(self, location="", metric_relabel_configs=rules)

    def relabel_settings(self) -> tuple[object, ...]:
        """What the compiled rules and their memo depend on: a reload that keeps these keeps the memo."""
        rules = tuple(dataclasses.replace(rule, location="") for rule in self.metric_relabel_configs)
        limits = (self.sample_limit, self.label_limit, self.label_name_length_limit)
        return (
            self.name,
            rules,
            *limits,
            self.label_value_length_limit,
            self.line_length_limit,
            self.relabel_cache_size,
            self.on_invalid_line,
        )

    def credential_settings(self) -> tuple[object, ...]:
        """What the upstream's credentials depend on (rotating them must not forget the last good set)."""
        return (self.url.split(":", 1)[0], self.tls_config, self.bearer_token_file)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration: the upstreams in file order (the first one is served on /metrics)."""

    source: str
    upstreams: tuple[UpstreamConfig, ...]
    warnings: tuple[Problem, ...] = ()
    """What is allowed but probably not meant (say, a query parameter sent twice)."""


def parse(text: str, *, source: str, base_dir: Path) -> Config:
    """Parse configuration text; raise ConfigError listing every problem with its location."""
    config, problems = read(text, source=source, base_dir=base_dir)
    if problems:
        raise ConfigError(source, problems)
    return config


def read(text: str, *, source: str, base_dir: Path) -> tuple[Config, list[Problem]]:
    """Parse configuration text as far as it goes: the upstreams that could be read (a rule with a problem
    left out) and every problem found, in line order; for checks that go on past the structure."""
    reader = _Reader(base_dir)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        return Config(source=source, upstreams=()), [yaml_problem(exc)]
    upstreams = reader.upstreams(root)
    config = Config(source=source, upstreams=upstreams, warnings=tuple(in_line_order(reader.warnings)))
    return config, in_line_order(reader.problems)


# Keys people bring from elsewhere, with what to write here instead (the hint is said after the suggestion).
_PROMETHEUS_TOP_LEVEL_KEYS = frozenset(
    {
        "global",
        "scrape_configs",
        "rule_files",
        "alerting",
        "remote_write",
        "remote_read",
        "storage",
        "tracing",
    }
)
_PROMETHEUS_FILE_HINT = (
    "this is a Prometheus configuration file; the relay's has only `upstreams:`. For each scrape job to "
    "relay, write an upstream: url = scheme://target + metrics_path, and copy params, tls_config and "
    "metric_relabel_configs as they are"
)
_CAMEL_HINT = "the Prometheus Operator's camelCase name; this file uses Prometheus' snake_case names"
_MOUNT_HINT = (
    "the Prometheus Operator names a key of a Secret; here mount the Secret as a volume and name its file"
)
_FOREIGN_KEYS: dict[str, tuple[str, str]] = {
    "relabel_configs": (
        "metric_relabel_configs",
        "in Prometheus relabel_configs rewrites targets before the scrape; the relay rewrites the scraped "
        "series, which is metric_relabel_configs",
    ),
    "metricRelabelings": ("metric_relabel_configs", _CAMEL_HINT),
    "relabelings": (
        "metric_relabel_configs",
        "relabelings rewrite targets in the Prometheus Operator; the relay rewrites the scraped series, "
        "which is metric_relabel_configs",
    ),
    "ca": ("ca_file", _MOUNT_HINT),
    "cert": ("cert_file", _MOUNT_HINT),
    "keySecret": ("key_file", _MOUNT_HINT),
    "bearerTokenSecret": ("bearer_token_file", _MOUNT_HINT),
    "authorization": (
        "bearer_token_file",
        "the relay sends `Authorization: Bearer` with the token read from bearer_token_file",
    ),
    "scrape_timeout": ("timeout", "the relay's name for the time an upstream scrape may take"),
    "scrapeTimeout": ("timeout", _CAMEL_HINT),
    "job_name": ("name", "an upstream's name"),
    "metrics_path": ("url", "the relay takes one url: scheme://host:port/path"),
    "scheme": ("url", "the relay takes one url: scheme://host:port/path"),
    "static_configs": ("url", "an upstream scrapes one target: write its address into url"),
    "targets": ("url", "an upstream scrapes one target: write its address into url"),
}


def _keys_of(cls: type) -> set[str]:
    """The keys a section of the file takes: its dataclass' settings, not where things stand."""
    return {item.name for item in dataclasses.fields(cls) if item.compare and item.name != "location"}


class _Reader(NodeReader):
    """The schema of the relay's configuration file over the located YAML reader."""

    foreign_keys = _FOREIGN_KEYS
    camel_case_hint = _CAMEL_HINT

    def __init__(self, base_dir: Path) -> None:
        super().__init__(base_dir)
        self.warnings: list[Problem] = []
        self._said_prometheus = False

    def unknown_key(self, key_node: yaml.Node, where: str, key: str, known: set[str]) -> None:
        if where == key and key in _PROMETHEUS_TOP_LEVEL_KEYS:  # at the top: a pasted Prometheus file
            if not self._said_prometheus:
                self.problem(key_node, where, _PROMETHEUS_FILE_HINT)
            self._said_prometheus = True
            return
        super().unknown_key(key_node, where, key, known)

    # --- the schema ---------------------------------------------------------------------------------

    def upstreams(self, root: yaml.Node | None) -> tuple[UpstreamConfig, ...]:
        if root is None:
            self.problem(None, "", "the file is empty; it needs `upstreams:` with at least one upstream")
            return ()
        top = self.mapping(root, "", {"upstreams"}, required={"upstreams"})
        if "upstreams" not in top:
            return ()
        items = self.sequence(top["upstreams"], "upstreams")
        if not items:
            self.problem(top["upstreams"], "upstreams", "needs at least one upstream")
        upstreams = [self.upstream(node, f"upstreams[{index}]") for index, node in enumerate(items)]
        found = [upstream for upstream in upstreams if upstream is not None]
        seen: set[str] = set()
        for node, upstream in zip(items, upstreams, strict=True):
            if upstream is not None and upstream.name in seen:
                self.problem(node, f"{upstream.location}.name", f"duplicate upstream name {upstream.name!r}")
            if upstream is not None:
                seen.add(upstream.name)
        return tuple(found)

    def upstream(self, node: yaml.Node, path: str) -> UpstreamConfig | None:
        known = _keys_of(UpstreamConfig)
        fields = self.mapping(node, path, known, required={"name", "url"})
        values: dict[str, Any] = {}
        converters: dict[str, Callable[[yaml.Node, str], Any]] = {
            "name": self.upstream_name,
            "url": self.url,
            "params": self.params,
            "timeout": self.duration,
            "tls_config": self.tls_config,
            "bearer_token_file": self.path,
            "metric_relabel_configs": self.relabel_configs,
            "sample_limit": self.count,
            "label_limit": self.count,
            "label_name_length_limit": self.count,
            "label_value_length_limit": self.count,
            "body_size_limit": self.size,
            "line_length_limit": self.size,
            "relabel_cache_size": self.count,
            "on_invalid_line": self.invalid_line_action,
            "min_interval": self.duration,
            "failover_urls": self.failover_urls,
        }
        for key, value_node in fields.items():
            value = converters[key](value_node, f"{path}.{key}")
            if value is not None:
                values[key] = value
        timeout = values.get("timeout")
        if timeout is not None and timeout <= 0:
            self.problem(fields["timeout"], f"{path}.timeout", "must be greater than 0")
        if values.get("relabel_cache_size") == 0:
            self.problem(fields["relabel_cache_size"], f"{path}.relabel_cache_size", "must be at least 1")
        if not {"name", "url"} <= values.keys():
            return None
        self.check_repeated_params(fields, path, values)
        scheme = urlsplit(values["url"]).scheme
        for index, url in enumerate(values.get("failover_urls", ())):
            if urlsplit(url).scheme != scheme:
                where = f"{path}.failover_urls[{index}]"
                item = fields["failover_urls"].value[index]
                self.problem(item, where, f"must use {scheme}:// as url does (the credentials are the same)")
        written = (
            {"bearer_token_file": fields["bearer_token_file"].value} if "bearer_token_file" in values else {}
        )
        return UpstreamConfig(location=path, lines=self.lines(node), written=written, **values)

    def check_repeated_params(self, fields: dict[str, yaml.Node], path: str, values: dict[str, Any]) -> None:
        """A parameter both in the url's query and in params is sent twice: allowed, probably not meant."""
        in_query = {key for key, _ in parse_qsl(urlsplit(values["url"]).query, keep_blank_values=True)}
        for key in sorted(in_query & {key for key, _ in values.get("params", ())}):
            self.warnings.append(
                Problem(
                    f"{path}.params.{key}",
                    f"{key} is in the url's query too, so the request carries it twice; keep one of them",
                    self.key_line(fields["params"], key),
                )
            )

    def invalid_line_action(self, node: yaml.Node, path: str) -> str | None:
        action = self.string(node, path)
        if action is not None and action not in INVALID_LINE_ACTIONS:
            self.problem(node, path, f"must be one of {', '.join(INVALID_LINE_ACTIONS)}, not {action!r}")
            return None
        return action

    def upstream_name(self, node: yaml.Node, path: str) -> str | None:
        name = self.string(node, path)
        if name is not None and not UPSTREAM_NAME_RE.fullmatch(name):
            self.problem(node, path, f"{name!r} is not a valid name: use letters, digits, '_' and '-'")
            return None
        return name

    def url(self, node: yaml.Node, path: str) -> str | None:
        url = self.string(node, path)
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.problem(node, path, "must be an absolute http:// or https:// URL with a host")
            return None
        if parts.username is not None or parts.password is not None:
            # Credentials in the URL would show in logs and on the landing page.
            self.problem(node, path, "must not contain credentials; use bearer_token_file or tls_config")
            return None
        if parts.fragment:
            self.problem(node, path, "must not contain a #fragment")
            return None
        return url

    def failover_urls(self, node: yaml.Node, path: str) -> tuple[str, ...] | None:
        urls = [self.url(item, f"{path}[{index}]") for index, item in enumerate(self.sequence(node, path))]
        good = [url for url in urls if url is not None]
        return tuple(good) if len(good) == len(urls) else None  # one item, one node: positions stay true

    def params(self, node: yaml.Node, path: str) -> tuple[tuple[str, str], ...] | None:
        pairs: list[tuple[str, str]] = []
        for key, values_node in self.mapping(node, path, None).items():
            if not isinstance(values_node, yaml.SequenceNode):
                self.problem(values_node, f"{path}.{key}", 'must be a list of strings, e.g. ["true"]')
                continue
            for value in self.string_list(values_node, f"{path}.{key}"):
                pairs.append((key, value))
        return tuple(pairs)

    def tls_config(self, node: yaml.Node, path: str) -> TLSConfig:
        known = _keys_of(TLSConfig)
        fields = self.mapping(node, path, known)
        values: dict[str, Any] = {}
        for key, value_node in fields.items():
            where = f"{path}.{key}"
            if key.endswith("_file"):
                values[key] = self.path(value_node, where)
            elif key == "server_name":
                values[key] = self.string(value_node, where)
            elif key == "insecure_skip_verify":
                values[key] = self.boolean(value_node, where)
            else:
                values[key] = self.tls_version(value_node, where)
        given = {key: value for key, value in values.items() if value is not None}
        written = {key: fields[key].value for key in given if key.endswith("_file")}
        tls = TLSConfig(lines=self.lines(node), written=written, **given)
        if (tls.cert_file is None) != (tls.key_file is None):
            self.problem(node, path, "cert_file and key_file must be given together")
        return tls

    def tls_version(self, node: yaml.Node, path: str) -> ssl.TLSVersion | None:
        text = self.string(node, path)
        if text is not None and text not in TLS_VERSIONS:
            self.problem(node, path, f"unknown TLS version {text!r} (use one of {', '.join(TLS_VERSIONS)})")
            return None
        return TLS_VERSIONS[text] if text is not None else None

    def relabel_configs(self, node: yaml.Node, path: str) -> tuple[RelabelRuleSpec, ...]:
        rules = []
        known = _keys_of(RelabelRuleSpec)
        for index, rule_node in enumerate(self.sequence(node, path)):
            where = f"{path}[{index}]"
            problems_before = len(self.problems)
            values: dict[str, Any] = {}
            for key, value_node in self.mapping(rule_node, where, known).items():
                if key == "source_labels":
                    values[key] = tuple(self.string_list(value_node, f"{where}.{key}"))
                elif key == "modulus":
                    values[key] = self.count(value_node, f"{where}.{key}")
                else:
                    values[key] = self.string(value_node, f"{where}.{key}", empty_ok=True)
            if len(self.problems) > problems_before:
                continue  # compiling it would only add problems that follow from these
            given = {key: value for key, value in values.items() if value is not None}
            rules.append(RelabelRuleSpec(location=where, lines=self.lines(rule_node), **given))
        return tuple(rules)
