"""Loading for start-up and reload: what each refuses, what a reload keeps, start-up's credential report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.errors import ConfigError
from relay.loading import check_file, compile_rules, load_checked, load_config
from tests.support import Pki, config_yaml

RULES = "    metric_relabel_configs:\n      - source_labels: [a]\n        action: drop\n"


@pytest.fixture
def expired_config(tmp_path: Path) -> Path:
    """A configuration whose client certificate expired in 2021."""
    pki = Pki(tmp_path)
    expired = pki.client_ca.issue_cert(
        "old@test", not_before=datetime(2020, 1, 1, tzinfo=UTC), not_after=datetime(2021, 1, 1, tzinfo=UTC)
    )
    path = tmp_path / "relay.yml"
    path.write_text(config_yaml("https://h/m", pki.client_files("client", expired)))
    return path


def test_start_up_takes_an_expired_certificate(expired_config):
    """Start-up loads the file with an expired certificate (the relay serves and says what is wrong; tls.py
    logs it when the set loads)."""
    assert (
        load_config(expired_config).upstreams[0].tls_config.cert_file
        == expired_config.parent / "client/tls.crt"
    )


def test_reload_refuses_an_expired_certificate(expired_config):
    """A reload (and --config.check) refuses a configuration whose client certificate expired."""
    with pytest.raises(ConfigError, match=r"tls_config\.cert_file: .* expired at 2021-01-01T00:00:00Z"):
        load_checked(expired_config)
    config, _ = load_checked(expired_config, strict_credentials=False)
    assert config.upstreams[0].name == "test"


def test_reload_keeps_unchanged_rules_and_compiles_changed_ones(tmp_path):
    """Rules whose settings did not change are kept (with their memo), even when their lines moved."""
    path = tmp_path / "relay.yml"
    path.write_text(config_yaml("http://h/m", extra=RULES))
    _, first = load_checked(path)
    path.write_text(
        "# the rules moved down a line\n" + config_yaml("http://h/m", extra="    timeout: 5s\n" + RULES)
    )
    _, moved = load_checked(path, first)
    assert moved["test"] is first["test"]
    path.write_text(config_yaml("http://h/m", extra=RULES.replace("drop", "keep")))
    _, changed = load_checked(path, first)
    assert changed["test"] is not first["test"]


def test_compile_rules_names_every_bad_rule_with_its_line(tmp_path):
    """compile_rules, given a configuration that parsed, raises with each bad rule located on its line."""
    path = tmp_path / "relay.yml"
    bad = "    metric_relabel_configs:\n      - action: keeep\n"
    bad += "      - action: hashmod\n        target_label: s\n"
    path.write_text(config_yaml("http://h/m", extra=bad))
    with pytest.raises(ConfigError) as raised:
        compile_rules(load_config(path), {})
    assert [(problem.line, problem.path) for problem in raised.value.problems] == [
        (5, "upstreams[0].metric_relabel_configs[0].action"),
        (6, "upstreams[0].metric_relabel_configs[1].modulus"),
    ]


def test_check_file_gives_the_loaded_credentials(tmp_path):
    """A passing check hands back each upstream's loaded credentials (plain HTTP's without TLS context)."""
    pki = Pki(tmp_path)
    path = tmp_path / "relay.yml"
    path.write_text(config_yaml("https://h/m", pki.client_files()) + "  - name: plain\n    url: http://h/m\n")
    checked = check_file(path)
    secure, plain = checked.credentials["test"], checked.credentials["plain"]
    assert secure is not None
    assert secure.certificate is not None
    assert plain is not None
    assert (plain.certificate, plain.ssl_context) == (None, None)
