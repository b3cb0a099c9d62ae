"""The protected listener (--web.config.file): TLS, client certificates, basic auth and headers on every
endpoint, re-read on change, checked with curl and with a real Prometheus."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import trustme
import yaml

from relay import inbound
from tests.prometheus_oracle import prometheus_config, running_prometheus, scrape_job
from tests.support import body_handler, config_yaml, require_tool, running_relay, running_upstream

BODY = b'# TYPE apiserver_requests_total counter\napiserver_requests_total{code="200"} 7\n'
PASSWORD = "correct horse"
PATHS = (
    "/",
    "/metrics",
    "/metrics/test",
    "/relay/metrics",
    "/relay/relabel?series=up",
    "/-/healthy",
    "/-/ready",
)


def basic_auth(user: str, password: str) -> dict[str, str]:
    """The Authorization header for basic auth."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bcrypt_hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


@dataclass
class Listener:
    """The relay's own certificate (its CA for clients to trust) and the web configuration file."""

    ca: trustme.CA
    folder: Path
    web_config: Path

    def write(self, **sections: object) -> None:
        self.web_config.write_text(yaml.safe_dump(sections), encoding="utf-8")

    def tls_section(self, **extra: object) -> dict[str, object]:
        return {
            "cert_file": str(self.folder / "relay.crt"),
            "key_file": str(self.folder / "relay.key"),
            **extra,
        }


@pytest.fixture
def listener(tmp_path: Path) -> Listener:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    folder = tmp_path / "listener"
    folder.mkdir()
    leaf.cert_chain_pems[0].write_to_path(str(folder / "relay.crt"))
    leaf.private_key_pem.write_to_path(str(folder / "relay.key"))
    ca.cert_pem.write_to_path(str(folder / "ca.crt"))
    return Listener(ca, folder, folder / "web.yml")


def curl(url: str, *args: str) -> tuple[int, str, str]:
    """curl's exit code, the HTTP status line and headers, and the body."""
    binary = require_tool("curl")
    result = subprocess.run(
        [binary, "--silent", "--show-error", "--include", "--max-time", "10", *args, url],
        capture_output=True,
        timeout=20,
        check=False,
    )
    head, _, body = result.stdout.decode().partition("\r\n\r\n")  # bytes: text mode would eat the \r
    return result.returncode, head, body or result.stderr.decode()


async def acurl(url: str, *args: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(curl, url, *args)


async def test_every_endpoint_needs_tls_and_the_password(pki, listener, tmp_path):
    """Over TLS with the right user every endpoint answers; a wrong or missing password is 401 everywhere,
    with the challenge; plain HTTP gets no answer."""
    listener.write(
        tls_server_config=listener.tls_section(), basic_auth_users={"prometheus": bcrypt_hash(PASSWORD)}
    )
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(
            config_yaml(upstream.url, pki.client_files()), tmp_path, web_config_file=listener.web_config
        ) as relay,
    ):
        assert relay.base_url.startswith("https://127.0.0.1:")
        trust = ("--cacert", str(listener.folder / "ca.crt"))
        user = ("--user", f"prometheus:{PASSWORD}")
        good = [await acurl(relay.base_url + path, *trust, *user) for path in PATHS]
        wrong = [await acurl(relay.base_url + path, *trust, "--user", "prometheus:guess") for path in PATHS]
        anonymous = await acurl(relay.base_url + "/metrics", *trust)
        plain = await acurl(relay.base_url.replace("https:", "http:") + "/metrics")
    assert all(code == 0 and head.startswith("HTTP/1.1 200") for code, head, _ in good), good
    assert good[1][2].encode() == BODY
    assert all(head.startswith("HTTP/1.1 401") for _, head, _ in wrong)
    assert 'www-authenticate: basic realm="metrics-relay"' in wrong[0][1].lower()
    assert anonymous[1].startswith("HTTP/1.1 401")
    assert plain[0] != 0 or not plain[1].startswith("HTTP/1.1 200")


async def test_client_certificates_are_required_when_configured(pki, listener, tmp_path):
    """RequireAndVerifyClientCert: a client certificate from the CA gets in, none or another CA's does not;
    client_allowed_sans narrows it to named clients."""
    clients = trustme.CA()
    allowed = clients.issue_cert("prometheus.monitoring.svc")
    other_name = clients.issue_cert("someone.else")
    stranger = trustme.CA().issue_cert("prometheus.monitoring.svc")
    clients.cert_pem.write_to_path(str(listener.folder / "clients.crt"))
    files = {}
    for name, leaf in (("allowed", allowed), ("other", other_name), ("stranger", stranger)):
        leaf.private_key_and_cert_chain_pem.write_to_path(str(listener.folder / f"{name}.pem"))
        files[name] = str(listener.folder / f"{name}.pem")
    listener.write(
        tls_server_config=listener.tls_section(
            client_auth_type="RequireAndVerifyClientCert",
            client_ca_file=str(listener.folder / "clients.crt"),
            client_allowed_sans=["prometheus.monitoring.svc"],
        )
    )
    async with running_relay(
        config_yaml("https://127.0.0.1:1/metrics", pki.client_files()),
        tmp_path,
        web_config_file=listener.web_config,
    ) as relay:
        trust = ("--cacert", str(listener.folder / "ca.crt"))
        url = relay.base_url + "/-/healthy"
        results = {name: await acurl(url, *trust, "--cert", path) for name, path in files.items()}
        without = await acurl(url, *trust)
    assert results["allowed"][1].startswith("HTTP/1.1 200")
    assert results["other"][1].startswith("HTTP/1.1 403")
    assert results["stranger"][0] != 0  # the handshake fails
    assert without[0] != 0


async def test_headers_go_on_every_response(pki, listener, tmp_path):
    """Configured headers are on answers, 401s and relayed (streamed) bodies alike."""
    listener.write(
        http_server_config={"headers": {"X-Frame-Options": "deny", "X-Content-Type-Options": "nosniff"}},
        basic_auth_users={"prometheus": bcrypt_hash(PASSWORD)},
    )
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(
            config_yaml(upstream.url, pki.client_files()), tmp_path, web_config_file=listener.web_config
        ) as relay,
    ):
        relayed = await acurl(relay.base_url + "/metrics", "--user", f"prometheus:{PASSWORD}")
        refused = await acurl(relay.base_url + "/metrics")
    for _, head, _ in (relayed, refused):
        assert "x-frame-options: deny" in head.lower()
        assert "x-content-type-options: nosniff" in head.lower()
    assert relayed[2].encode() == BODY


async def test_changes_are_followed_and_a_broken_file_keeps_the_last_good_one(
    pki, listener, tmp_path, caplog
):
    """A new password works at once; a broken file is refused (gauge 0, logged) while the last good one
    stays in force; fixing it brings the gauge back."""
    listener.write(basic_auth_users={"prometheus": bcrypt_hash("first")})
    async with running_relay(
        config_yaml("https://127.0.0.1:1/metrics", pki.client_files()),
        tmp_path,
        web_config_file=listener.web_config,
    ) as relay:
        url = relay.base_url + "/-/healthy"
        gauge = relay.runtime.metrics.web_config_reload_success
        assert (await acurl(url, "--user", "prometheus:first"))[1].startswith("HTTP/1.1 200")
        listener.write(basic_auth_users={"prometheus": bcrypt_hash("second")})
        after_change = [await acurl(url, "--user", f"prometheus:{word}") for word in ("first", "second")]
        listener.web_config.write_text("basic_auth_users:\n  prometheus: not-a-hash\n")
        broken = await acurl(url, "--user", "prometheus:second")
        broken_gauge = gauge._value.get()
        listener.write(basic_auth_users={"prometheus": bcrypt_hash("third")})
        fixed = await acurl(url, "--user", "prometheus:third")
        fixed_gauge = gauge._value.get()
    assert after_change[0][1].startswith("HTTP/1.1 401")
    assert after_change[1][1].startswith("HTTP/1.1 200")
    assert broken[1].startswith("HTTP/1.1 200")  # the last good file still applies
    assert (broken_gauge, fixed_gauge) == (0, 1)
    assert fixed[1].startswith("HTTP/1.1 200")
    assert "web configuration changed but is unusable" in caplog.text
    assert "not-a-hash" not in caplog.text


async def test_a_rotated_listener_certificate_is_served_without_a_restart(pki, listener, tmp_path):
    """Replacing the certificate and key files: the next handshake presents the new certificate."""
    listener.write(tls_server_config=listener.tls_section())
    async with running_relay(
        config_yaml("https://127.0.0.1:1/metrics", pki.client_files()),
        tmp_path,
        web_config_file=listener.web_config,
    ) as relay:
        url = relay.base_url + "/-/healthy"
        before = await acurl(url, "--cacert", str(listener.folder / "ca.crt"))
        new_ca = trustme.CA()
        leaf = new_ca.issue_cert("127.0.0.1")
        leaf.cert_chain_pems[0].write_to_path(str(listener.folder / "relay.crt"))
        leaf.private_key_pem.write_to_path(str(listener.folder / "relay.key"))
        new_ca.cert_pem.write_to_path(str(listener.folder / "new-ca.crt"))
        old_trust = await acurl(url, "--cacert", str(listener.folder / "ca.crt"))
        new_trust = await acurl(url, "--cacert", str(listener.folder / "new-ca.crt"))
    assert before[1].startswith("HTTP/1.1 200")
    assert old_trust[0] != 0  # the old CA no longer vouches for what the relay presents
    assert new_trust[1].startswith("HTTP/1.1 200")


async def test_a_verified_password_costs_one_bcrypt_round(pki, listener, tmp_path, monkeypatch):
    """Scrapes with the same credentials are checked against bcrypt once, then from the cache."""
    listener.write(basic_auth_users={"prometheus": bcrypt_hash(PASSWORD)})
    calls = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(inbound.bcrypt, "checkpw", counting_checkpw)
    async with running_relay(
        config_yaml("https://127.0.0.1:1/metrics", pki.client_files()),
        tmp_path,
        web_config_file=listener.web_config,
    ) as relay:
        for _ in range(5):
            assert (await acurl(relay.base_url + "/-/healthy", "--user", f"prometheus:{PASSWORD}"))[
                1
            ].startswith("HTTP/1.1 200")
        await acurl(relay.base_url + "/-/healthy", "--user", "nobody:x")
    assert calls == [PASSWORD.encode(), b"x"]  # an unknown user is still checked (against a decoy hash)


async def test_prometheus_scrapes_through_basic_auth_and_tls(pki, listener, tmp_path):
    """A real Prometheus with basic_auth and tls_config scrapes the protected relay: target up, the relayed
    series and the relay's own metrics stored."""
    binary = require_tool("prometheus")
    listener.write(
        tls_server_config=listener.tls_section(), basic_auth_users={"prometheus": bcrypt_hash(PASSWORD)}
    )
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD)
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(
            config_yaml(upstream.url, pki.client_files()), tmp_path, web_config_file=listener.web_config
        ) as relay,
    ):
        target = relay.base_url.removeprefix("https://")
        jobs = []
        for name, path in (("relayed", "/metrics"), ("relay", "/relay/metrics")):
            job = scrape_job(name, target, path)
            job["scheme"] = "https"
            job["tls_config"] = {"ca_file": str(listener.folder / "ca.crt")}
            job["basic_auth"] = {"username": "prometheus", "password_file": str(password_file)}
            jobs.append(job)
        async with running_prometheus(binary, prometheus_config(jobs), tmp_path / "prometheus") as prometheus:
            await prometheus.wait_until_up(["relayed", "relay"], within=30)
            at = await prometheus.last_time_all_up(["relayed", "relay"])
            relayed = await prometheus.query('apiserver_requests_total{job="relayed"}', at)
            own = await prometheus.query('metrics_relay_scrapes_total{job="relay"}', at)
    assert [sample["value"][1] for sample in relayed] == ["7"]
    assert own


@pytest.mark.parametrize("command", ["--config.check", "start"])
def test_a_broken_web_config_is_a_located_error_on_the_command_line(pki, tmp_path, command):
    """--config.check reports the web configuration's problems with the relay's own; starting with them
    exits 1 naming them."""
    config = tmp_path / "relay.yml"
    config.write_text(config_yaml("https://127.0.0.1:1/metrics", pki.client_files()))
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  prometheus: hunter2\n")
    flags = [f"--config.file={config}", f"--web.config.file={web}", "--web.listen-address=127.0.0.1:0"]
    if command != "start":
        flags.append(command)
    result = subprocess.run(
        [sys.executable, "-m", "relay", *flags], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 1
    assert f"{web}:2: basic_auth_users.prometheus: is not a bcrypt hash" in result.stderr
    assert "hunter2" not in result.stderr


def test_config_check_says_the_web_config_is_fine(pki, tmp_path):
    """A good web configuration file is checked and named in the OK summary."""
    config = tmp_path / "relay.yml"
    config.write_text(config_yaml("https://127.0.0.1:1/metrics", pki.client_files()))
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: {bcrypt_hash(PASSWORD)}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay",
            f"--config.file={config}",
            f"--web.config.file={web}",
            "--config.check",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK")
    assert f"web configuration {web}: OK" in result.stdout


async def test_a_refused_file_is_tried_again_when_the_file_it_names_appears(
    pki, listener, tmp_path, monkeypatch
):
    """web.yml names a certificate that is not there yet (two Secrets, updated apart): refused at first,
    taken once the certificate arrives, without web.yml changing again."""
    monkeypatch.setattr(inbound, "RETRY_SECONDS", 0.2)
    listener.write(tls_server_config=listener.tls_section())
    async with running_relay(
        config_yaml("https://127.0.0.1:1/metrics", pki.client_files()),
        tmp_path,
        web_config_file=listener.web_config,
    ) as relay:
        url = relay.base_url + "/-/healthy"
        gauge = relay.runtime.metrics.web_config_reload_success
        new_ca = trustme.CA()
        listener.write(
            tls_server_config={
                "cert_file": str(listener.folder / "next.crt"),
                "key_file": str(listener.folder / "next.key"),
            }
        )
        before = await acurl(url, "--cacert", str(listener.folder / "ca.crt"))
        refused_gauge = gauge._value.get()
        leaf = new_ca.issue_cert("127.0.0.1")
        leaf.cert_chain_pems[0].write_to_path(str(listener.folder / "next.crt"))
        leaf.private_key_pem.write_to_path(str(listener.folder / "next.key"))
        new_ca.cert_pem.write_to_path(str(listener.folder / "next-ca.crt"))
        await asyncio.sleep(0.3)
        after = await acurl(url, "--cacert", str(listener.folder / "next-ca.crt"))
    assert before[1].startswith("HTTP/1.1 200")  # the old certificate still served meanwhile
    assert refused_gauge == 0
    assert after[1].startswith("HTTP/1.1 200")
    assert gauge._value.get() == 1


async def test_an_emptied_file_does_not_turn_basic_auth_off(pki, listener, tmp_path, caplog):
    """A web.yml truncated (or rewritten without users) is refused: the relay still asks for the password."""
    listener.write(basic_auth_users={"prometheus": bcrypt_hash(PASSWORD)})
    async with running_relay(
        config_yaml("https://127.0.0.1:1/metrics", pki.client_files()),
        tmp_path,
        web_config_file=listener.web_config,
    ) as relay:
        listener.web_config.write_text("")
        anonymous = await acurl(relay.base_url + "/-/healthy")
    assert anonymous[1].startswith("HTTP/1.1 401")
    errors = [getattr(record, "error", "") for record in caplog.records]
    assert any("turning basic auth on or off needs a restart" in error for error in errors)


async def test_wrong_guesses_do_not_evict_the_scrapers_credentials(pki, listener, tmp_path, monkeypatch):
    """Hundreds of wrong passwords later, the scraper's verified password is still remembered (no bcrypt)."""
    listener.write(basic_auth_users={"prometheus": bcrypt_hash(PASSWORD)})
    calls = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(inbound.bcrypt, "checkpw", counting_checkpw)
    async with (
        running_relay(
            config_yaml("https://127.0.0.1:1/metrics", pki.client_files()),
            tmp_path,
            web_config_file=listener.web_config,
        ) as relay,
        aiohttp.ClientSession() as session,
    ):
        url = relay.base_url + "/-/healthy"
        good = basic_auth("prometheus", PASSWORD)
        async with session.get(url, headers=good) as first:
            assert first.status == 200
        for guess in range(inbound.VERIFIED_CACHE_SIZE + 10):
            async with session.get(url, headers=basic_auth("prometheus", f"guess-{guess}")) as wrong:
                assert wrong.status == 401
        calls.clear()
        async with session.get(url, headers=good) as again:
            assert again.status == 200
    assert calls == []
