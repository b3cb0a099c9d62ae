"""Reading the configuration file into a checked configuration: parse, compile rules, check credentials.

Nothing here touches the running relay: `Runtime` applies what this module returns. A check goes as far as
it can and reports every problem of the file at once: structure, rules and the files it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from relay import config as config_module
from relay.config import Config, UpstreamConfig
from relay.errors import ConfigError, Problem
from relay.rules import Rules
from relay.tls import Credentials, check_all, setting_line, shown_path
from relay.yamlnodes import in_line_order

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True, slots=True)
class CheckedConfig:
    """A configuration that passed every check, with what the checks built: rules and credentials."""

    config: Config
    rules: dict[str, Rules]
    credentials: dict[str, Credentials | None]  # None: the upstream's credentials did not load

    def summary(self) -> list[str]:
        """What the configuration sets up, for `--config.check` to print after OK: a line for the whole (the
        first client certificate to expire named), then a line per upstream."""
        upstreams = self.config.upstreams
        rule_count = sum(len(upstream.metric_relabel_configs) for upstream in upstreams)
        whole = f"{self.config.source}: {_count(len(upstreams), 'upstream')}, {_count(rule_count, 'rule')}"
        expiring = [
            (credentials.certificate.not_after, name)
            for name, credentials in self.credentials.items()
            if credentials is not None and credentials.certificate is not None
        ]
        if expiring:
            not_after, name = min(expiring)
            whole += f"; the first client certificate to expire is {name}'s, at {not_after:{_TIME_FORMAT}}"
        lines = [whole]
        for upstream in upstreams:
            facts = [upstream.query_url(), _count(len(upstream.metric_relabel_configs), "rule")]
            credentials = self.credentials.get(upstream.name)
            certificate = credentials.certificate if credentials is not None else None
            if certificate is not None:
                facts.append(
                    f"client certificate {certificate.subject} valid {certificate.not_before:{_TIME_FORMAT}} "
                    f"to {certificate.not_after:{_TIME_FORMAT}}"
                )
            if credentials is not None and credentials.ca_not_after is not None:
                facts.append(f"CA valid to {credentials.ca_not_after:{_TIME_FORMAT}}")
            lines.append(f"  {upstream.name}: {', '.join(facts)}")
        return lines


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def load_config(path: Path) -> Config:
    """Read and parse the configuration file; ConfigError if it is unreadable or invalid."""
    return config_module.parse(_read_text(path), source=str(path), base_dir=path.parent)


def check_file(
    path: Path,
    current_rules: dict[str, Rules] | None = None,
    *,
    strict_credentials: bool = True,
    now: datetime | None = None,
) -> CheckedConfig:
    """Every check of the file at once (structure, rules, credential files); ConfigError listing every
    problem in line order. With `strict_credentials` a client certificate outside its validity period at
    `now` is a problem too."""
    source = str(path)
    loaded, problems = config_module.read(_read_text(path), source=source, base_dir=path.parent)
    rules, rule_problems = _compile(loaded, current_rules or {})
    credentials: dict[str, Credentials | None] = {}
    for upstream in loaded.upstreams:
        credentials[upstream.name], found = _check_credentials(upstream, now or datetime.now(UTC))
        problems.extend(problem for problem, validity in found if strict_credentials or not validity)
    every = in_line_order([*problems, *rule_problems])
    if every:
        raise ConfigError(source, every)
    return CheckedConfig(loaded, rules, credentials)


def load_checked(
    path: Path, current_rules: dict[str, Rules] | None = None, *, strict_credentials: bool = True
) -> tuple[Config, dict[str, Rules]]:
    """The configuration and its compiled rules, for a reload: ConfigError on any problem `check_file`
    finds (an expired client certificate too, unless not `strict_credentials`)."""
    checked = check_file(path, current_rules, strict_credentials=strict_credentials)
    return checked.config, checked.rules


def compile_rules(config: Config, current: dict[str, Rules]) -> dict[str, Rules]:
    """Each upstream's compiled rules; an upstream whose rules and limits are unchanged keeps them (and its
    memo), whatever else changed (timeout, URL, credentials). ConfigError naming each bad rule."""
    rules, problems = _compile(config, current)
    if problems:
        raise ConfigError(config.source, problems)
    return rules


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [Problem("", f"cannot read the configuration file: {exc}")]) from None


def _compile(config: Config, current: dict[str, Rules]) -> tuple[dict[str, Rules], list[Problem]]:
    rules: dict[str, Rules] = {}
    problems: list[Problem] = []
    for upstream in config.upstreams:
        kept = current.get(upstream.name)
        if kept is not None and kept.upstream.relabel_settings() == upstream.relabel_settings():
            rules[upstream.name] = kept
            continue
        try:
            rules[upstream.name] = Rules.for_upstream(upstream)
        except ConfigError as exc:
            problems.extend(exc.problems)
    return rules, problems


def _check_credentials(
    upstream: UpstreamConfig, now: datetime
) -> tuple[Credentials | None, list[tuple[Problem, bool]]]:
    """The upstream's credentials if they loaded, and each problem located, marked whether it is one of
    validity (a start-up goes on with it)."""
    checked = check_all(upstream, now)
    located = []
    for problem in checked.problems:
        path = shown_path(upstream, problem.setting)
        message = f"{path}: {problem.message}" if path else problem.message
        where = Problem(
            f"{upstream.location}.{problem.setting}", message, setting_line(upstream, problem.setting)
        )
        located.append((where, problem.validity))
    return checked.credentials, located
