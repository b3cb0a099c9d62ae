"""Reading the configuration file into a checked configuration: parse, compile rules, check credentials.

Nothing here touches the running relay: `Runtime` applies what this module returns.
"""

from __future__ import annotations

from pathlib import Path

from relay import config as config_module
from relay.config import Config
from relay.errors import ClientTLSMaterialError, ConfigError, Problem
from relay.rules import Rules
from relay.tls import check as check_credentials


def load_config(path: Path) -> Config:
    """Read and parse the configuration file; ConfigError if it is unreadable or invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [Problem("", f"cannot read the configuration file: {exc}")]) from None
    return config_module.parse(text, source=str(path), base_dir=path.parent)


def compile_rules(config: Config, current: dict[str, Rules]) -> dict[str, Rules]:
    """Each upstream's compiled rules; an upstream whose rules and limits are unchanged keeps them (and its
    memo), whatever else changed (timeout, URL, credentials)."""
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
    if problems:
        raise ConfigError(config.source, problems)
    return rules


def credential_problems(config: Config) -> list[Problem]:
    """Every upstream's credential files loaded once: the problems found, located like config errors."""
    problems = []
    for upstream in config.upstreams:
        try:
            check_credentials(upstream)
        except ClientTLSMaterialError as exc:
            problems.append(Problem(f"{upstream.location}.{exc.field}", exc.problem))
    return problems


def load_checked(
    path: Path, current_rules: dict[str, Rules] | None = None
) -> tuple[Config, dict[str, Rules]]:
    """The configuration, its compiled rules and its checked credential files; ConfigError otherwise."""
    loaded = load_config(path)
    rules = compile_rules(loaded, current_rules or {})
    problems = credential_problems(loaded)
    if problems:
        raise ConfigError(str(path), problems)
    return loaded, rules
