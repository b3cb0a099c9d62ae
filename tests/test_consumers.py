"""The shipped scrape configs run by the scrapers they are for: vmagent into victoria-metrics, Prometheus."""

from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import functools
import os
import re
import shlex
import signal
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml

from tests.prometheus_oracle import (
    SYNTHETIC_NAMES,
    TARGET_LABELS,
    LabelSet,
    diff_series,
    free_port,
    running_prometheus,
)
from tests.support import (
    Pki,
    Relay,
    Upstream,
    body_handler,
    config_yaml,
    require_fixtures,
    require_tool,
    running_relay,
    running_upstream,
)
from tests.test_inbound import BODY as INBOUND_BODY
from tests.test_inbound import (
    PASSWORD,
    Listener,
    bcrypt_hash,
    listener,  # noqa: F401 - a fixture: pytest finds it by its name in this module
)

ROOT = Path(__file__).resolve().parent.parent
SCRAPE_CONFIGS = ROOT / "deploy" / "scrape-configs"
ACK_ONE_EXAMPLE = ROOT / "config" / "ack-one.yml"
# The relay's web configuration in deploy/overlays/protected, with the placeholder users replace by a hash.
PROTECTED_WEB_CONFIG = ROOT / "deploy" / "overlays" / "protected" / "web.yml"
BCRYPT_PLACEHOLDER = "REPLACE_WITH_BCRYPT_HASH"
# The host of the shipped scrape configs' targets, which the READMEs' serving certificate names.
SHIPPED_TARGET_HOST = "metrics-relay.monitoring.svc"
FIXTURE = "kube-apiserver-1.35-minikube.prom"
# A metric that config/ack-one.yml's rules drop and the fixture has: its absence shows the rules ran.
DROPPED_FAMILY_SAMPLE = "etcd_request_duration_seconds_bucket"

RELAYED_JOB = "ack-control-plane"
RELAY_JOB = "metrics-relay"
# The shipped configs add this label to both jobs' targets.
STATIC_LABELS = (("cluster", "my-ack-cluster"),)
# Long enough for a cold scrape of the fixture on the Python engine on a busy machine, short for the test.
SCRAPE_SECONDS = 2
# The flag deploy/scrape-configs/vmagent.yml tells users of vmagent before v1.102.0 to start it with.
VMAGENT_SIZE_FLAG = "-promscrape.maxScrapeSize=64MiB"
SELF_METRICS = {"metrics_relay_build_info", "metrics_relay_scrapes_total", "metrics_relay_upstream_up"}
# vmagent writes more series of its own per target than Prometheus' five, all named scrape_*.
VMAGENT_SYNTHETIC_PREFIX = "scrape_"
PEER_START_SECONDS = 30
STORED_WITHIN_SECONDS = 60  # each wait; the tests' timeouts leave room for all of them
UPSTREAM_REPORTED_UP = f'metrics_relay_upstream_up{{job="{RELAY_JOB}", upstream="ack-control-plane"}} == 1'

# One sample of the text format: name, optional label set, value, optional timestamp.
SAMPLE_LINE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? +\S+(?: +\S+)?")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
UNESCAPE = re.compile(r"\\.")
ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


# --- the relay under test ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Protection:
    """The relay's listener protected as deploy/overlays/protected does it, with the test's certificate and
    password: the relay's web.yml, and the two files its scrapers are given."""

    web_config_file: Path
    ca_file: Path
    password_file: Path
    username: str


def protect_like_the_overlay(directory: Path, cert_file: Path, key_file: Path, ca_file: Path) -> Protection:
    """The shipped web.yml written into `directory` with these certificate files and a hash of the test's
    password in place of its placeholder, and the scrapers' password file beside it; `ca_file` vouches for
    the certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    document = yaml.safe_load(PROTECTED_WEB_CONFIG.read_text(encoding="utf-8"))
    document["tls_server_config"].update(cert_file=str(cert_file), key_file=str(key_file))
    ((username, placeholder),) = document["basic_auth_users"].items()
    assert placeholder == BCRYPT_PLACEHOLDER
    document["basic_auth_users"][username] = bcrypt_hash(PASSWORD)
    web_config_file = directory / "web.yml"
    web_config_file.write_text(yaml.safe_dump(document), encoding="utf-8")
    password_file = directory / "scraper-password"
    password_file.write_text(PASSWORD, encoding="utf-8")
    return Protection(web_config_file, ca_file, password_file, username)


def protect_listener(request: pytest.FixtureRequest, directory: Path) -> Protection:
    """The test_inbound `listener` (a certificate for 127.0.0.1 and its CA) behind the shipped web.yml."""
    relay_listener: Listener = request.getfixturevalue("listener")
    tls = relay_listener.tls_section()
    return protect_like_the_overlay(
        directory, Path(str(tls["cert_file"])), Path(str(tls["key_file"])), relay_listener.folder / "ca.crt"
    )


@pytest.fixture(params=["plain", "protected"])
def protection(request: pytest.FixtureRequest, tmp_path: Path) -> Protection | None:
    """Each listener in turn: plain HTTP (None), then HTTPS with basic auth from the shipped web.yml with its
    paths rewritten to the test's certificate and its placeholder to a hash of the test's password."""
    return None if request.param == "plain" else protect_listener(request, tmp_path / "protected")


def scrape_config_name(scraper: str, protection: Protection | None) -> str:
    """The shipped scrape config of `scraper` (prometheus, vmagent) for this listener."""
    return f"{scraper}-protected.yml" if protection else f"{scraper}.yml"


def client_session(protection: Protection | None) -> aiohttp.ClientSession:
    """A client for the relay, with its CA and the scrapers' password when it is protected."""
    if protection is None:
        return aiohttp.ClientSession()
    trust = ssl.create_default_context(cafile=protection.ca_file)
    # The header itself: aiohttp.BasicAuth warns as deprecated in recent releases.
    credentials = base64.b64encode(f"{protection.username}:{PASSWORD}".encode()).decode()
    return aiohttp.ClientSession(
        headers={"Authorization": f"Basic {credentials}"}, connector=aiohttp.TCPConnector(ssl=trust)
    )


def ack_one_config_for(upstream: Upstream, pki: Pki) -> str:
    """config/ack-one.yml as shipped, pointed at the test's upstream and client files."""
    document = yaml.safe_load(ACK_ONE_EXAMPLE.read_text(encoding="utf-8"))
    (upstream_config,) = document["upstreams"]
    upstream_config["url"] = upstream.url
    files = pki.client_files()
    upstream_config["tls_config"].update(
        ca_file=str(files.ca_file), cert_file=str(files.cert_file), key_file=str(files.key_file)
    )
    return yaml.safe_dump(document, sort_keys=False)


@contextlib.asynccontextmanager
async def relay_of_fixture(
    directory: Path, protection: Protection | None = None
) -> AsyncIterator[tuple[Upstream, Relay]]:
    """A real mTLS upstream serving the captured kube-apiserver body, under the certificate name `kubernetes`
    (the shipped server_name), and a relay running config/ack-one.yml against it, its listener protected
    if asked."""
    body = (require_fixtures() / FIXTURE).read_bytes()
    assert f"\n{DROPPED_FAMILY_SAMPLE}{{".encode() in body
    pki = Pki(directory, server_identities=("kubernetes",))
    async with (
        running_upstream(pki.server_context(), body_handler(body)) as upstream,
        running_relay(
            ack_one_config_for(upstream, pki),
            directory,
            web_config_file=protection.web_config_file if protection else None,
        ) as relay,
    ):
        yield upstream, relay


def scrape_config_for(name: str, relay: Relay, protection: Protection | None = None) -> str:
    """A shipped scrape config with every target on the test's relay, a short interval and the protection's
    files; nothing else changed."""
    document = yaml.safe_load(with_scraper_files(name, protection))
    document["global"].update(scrape_interval=f"{SCRAPE_SECONDS}s", scrape_timeout=f"{SCRAPE_SECONDS}s")
    for job in document["scrape_configs"]:
        for group in job["static_configs"]:
            group["targets"] = [urlsplit(relay.base_url).netloc]
    return yaml.safe_dump(document, sort_keys=False)


def with_scraper_files(name: str, protection: Protection | None) -> str:
    """A shipped scrape config with its CA and password files (if it names any) the protection's."""
    document = yaml.safe_load((SCRAPE_CONFIGS / name).read_text(encoding="utf-8"))
    for job in document["scrape_configs"]:
        if "basic_auth" in job:
            assert protection is not None, f"{name} is for a protected relay"
            job["tls_config"]["ca_file"] = str(protection.ca_file)
            job["basic_auth"]["password_file"] = str(protection.password_file)
    return yaml.safe_dump(document, sort_keys=False)


def label_set(labels: dict[str, str]) -> LabelSet:
    """Labels as a stored series has them: sorted, and without empty values (storing drops those)."""
    return tuple(sorted((name, value) for name, value in labels.items() if value))


def names_of(series: set[LabelSet] | dict[LabelSet, str]) -> set[str]:
    """The metric names among these series."""
    return {dict(labels)["__name__"] for labels in series}


def exposition_series(text: str) -> set[LabelSet]:
    """The series of a text-format body, read line by line as written (prometheus_client's parser would
    rename counters without `_total`). Enough for bodies whose lines are one sample each."""
    found = set()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        sample = SAMPLE_LINE.fullmatch(line)
        assert sample, f"not a sample line: {line!r}"
        labels = {
            name: UNESCAPE.sub(lambda m: ESCAPES.get(m[0], m[0]), value)
            for name, value in LABEL.findall(sample["labels"] or "")
        }
        found.add(label_set({"__name__": sample["name"], **labels}))
    return found


async def relayed_series(session: aiohttp.ClientSession, relay: Relay) -> set[LabelSet]:
    """The series of the relay's /metrics answer (what the scrapers should have stored)."""
    async with session.get(f"{relay.base_url}/metrics") as answer:
        assert answer.status == 200, await answer.text()
        found = exposition_series(await answer.text())
    assert found, "the relay served no series"
    assert DROPPED_FAMILY_SAMPLE not in names_of(found)
    return found


def split_target_labels(stored: set[LabelSet]) -> set[LabelSet]:
    """The stored series without the shipped configs' static labels, which every one must carry."""
    without = set()
    for series in stored:
        assert set(STATIC_LABELS) <= set(series), f"no {STATIC_LABELS} on {series}"
        without.add(tuple(pair for pair in series if pair not in STATIC_LABELS))
    return without


# --- vmagent and victoria-metrics ------------------------------------------------------------------------


@dataclass
class Peer:
    """A running VictoriaMetrics binary: its HTTP address and its log."""

    base_url: str
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        """The last lines it logged."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@contextlib.asynccontextmanager
async def running_peer(binary: str, flags: Sequence[str], directory: Path) -> AsyncIterator[Peer]:
    """Run a VictoriaMetrics binary with `flags` in `directory` on a free 127.0.0.1 port until
    /health answers OK; SIGTERM it at the end. A port taken between choosing and binding it is chosen anew."""
    log_path = log_file_in(directory)
    for attempt in range(3):
        port = free_port()
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                binary,
                f"-httpListenAddr=127.0.0.1:{port}",
                *flags,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        peer = Peer(f"http://127.0.0.1:{port}", log_path)
        # A test cut short by pytest-timeout may never reach the `finally` below.
        kill_at_exit = functools.partial(kill_quietly, process.pid)
        atexit.register(kill_at_exit)
        try:
            if await wait_healthy(peer, process, last_attempt=attempt == 2):
                yield peer
                return
        finally:
            await stop(process)
            atexit.unregister(kill_at_exit)
    raise AssertionError("unreachable")


def log_file_in(directory: Path) -> Path:
    """The log file of a peer run in `directory`, which is created."""
    directory.mkdir(parents=True, exist_ok=True)
    return directory / "log.txt"


async def wait_healthy(peer: Peer, process: asyncio.subprocess.Process, *, last_attempt: bool) -> bool:
    """True once /health says OK; False if the port was taken (try another); a failure otherwise."""
    async with aiohttp.ClientSession() as session:
        try:
            async with asyncio.timeout(PEER_START_SECONDS):
                while True:
                    if process.returncode is not None:
                        if "address already in use" in peer.log_tail() and not last_attempt:
                            return False
                        pytest.fail(
                            f"{peer.log_path.parent.name} exited ({process.returncode}):\n{peer.log_tail()}"
                        )
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        async with session.get(
                            f"{peer.base_url}/health", timeout=aiohttp.ClientTimeout(total=2)
                        ) as answer:
                            if answer.status == 200:
                                return True
                    await asyncio.sleep(0.1)
        except TimeoutError:
            pytest.fail(
                f"{peer.log_path.parent.name} not healthy after {PEER_START_SECONDS}s:\n{peer.log_tail()}"
            )


def kill_quietly(pid: int) -> None:
    """SIGKILL a peer left running at interpreter exit."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM and wait; SIGKILL if it lingers."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 15)
    except TimeoutError:
        process.kill()
        await process.wait()


async def series_in_victoria_metrics(
    session: aiohttp.ClientSession, victoria_metrics: Peer, job: str
) -> set[LabelSet]:
    """The series victoria-metrics holds for `job`, made searchable first, without job and instance and
    without vmagent's own per-target series (up, scrape_*)."""
    async with session.get(f"{victoria_metrics.base_url}/internal/force_flush") as answer:
        assert answer.status == 200, await answer.text()
    params = {"match[]": f'{{job="{job}"}}'}
    async with session.get(f"{victoria_metrics.base_url}/api/v1/series", params=params) as answer:
        document = await answer.json(content_type=None)
    assert document.get("status") == "success", document
    found = set()
    for metric in document["data"]:
        name = metric["__name__"]
        if name not in SYNTHETIC_NAMES and not name.startswith(VMAGENT_SYNTHETIC_PREFIX):
            found.add(label_set({key: value for key, value in metric.items() if key not in TARGET_LABELS}))
    return found


def vmagent_dry_run(config: Path) -> subprocess.CompletedProcess[str]:
    """`vmagent -promscrape.config=CONFIG -promscrape.config.dryRun` (strict parsing, its default)."""
    return subprocess.run(
        [require_tool("vmagent"), f"-promscrape.config={config}", "-promscrape.config.dryRun"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


@pytest.mark.peer
def test_shipped_vmagent_config_passes_vmagent_dry_run():
    """vmagent's own strict check accepts deploy/scrape-configs/vmagent.yml as shipped."""
    result = vmagent_dry_run(SCRAPE_CONFIGS / "vmagent.yml")
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.peer
def test_shipped_protected_vmagent_config_passes_vmagent_dry_run(
    tmp_path: Path, request: pytest.FixtureRequest
):
    """vmagent's strict check, which reads the CA and password files, accepts vmagent-protected.yml with
    only those two paths changed to files that exist."""
    protection = protect_listener(request, tmp_path / "protected")
    config = tmp_path / "vmagent-protected.yml"
    config.write_text(with_scraper_files("vmagent-protected.yml", protection), encoding="utf-8")
    result = vmagent_dry_run(config)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.peer
@pytest.mark.fixtures
@pytest.mark.timeout(180)
async def test_vmagent_scrapes_the_relay_into_victoria_metrics(tmp_path: Path, protection: Protection | None):
    """vmagent with the shipped config for the listener (targets on a real relay of a real mTLS upstream;
    plain, or protected as deploy/overlays/protected does it) remote-writes every relayed series, and the
    relay's own metrics, into a real victoria-metrics."""
    vmagent, victoria_metrics_binary = require_tool("vmagent"), require_tool("victoria-metrics")
    async with contextlib.AsyncExitStack() as stack:
        upstream, relay = await stack.enter_async_context(relay_of_fixture(tmp_path, protection))
        name = scrape_config_name("vmagent", protection)
        config = tmp_path / name
        config.write_text(scrape_config_for(name, relay, protection), encoding="utf-8")
        checked = vmagent_dry_run(config)
        assert checked.returncode == 0, checked.stderr[-3000:]
        victoria_metrics = await stack.enter_async_context(
            running_peer(
                victoria_metrics_binary,
                [f"-storageDataPath={tmp_path / 'victoria-metrics' / 'data'}"],
                tmp_path / "victoria-metrics",
            )
        )
        agent = await stack.enter_async_context(
            running_peer(
                vmagent,
                [
                    f"-promscrape.config={config}",
                    VMAGENT_SIZE_FLAG,
                    f"-remoteWrite.url={victoria_metrics.base_url}/api/v1/write",
                    f"-remoteWrite.tmpDataPath={tmp_path / 'vmagent' / 'queue'}",
                ],
                tmp_path / "vmagent",
            )
        )
        session = await stack.enter_async_context(client_session(protection))
        expected = await relayed_series(session, relay)
        stored: set[LabelSet] = set()
        own: set[LabelSet] = set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STORED_WITHIN_SECONDS):
                while len(stored) < len(expected) or not names_of(own) >= SELF_METRICS:
                    await asyncio.sleep(1)
                    stored = await series_in_victoria_metrics(session, victoria_metrics, RELAYED_JOB)
                    own = await series_in_victoria_metrics(session, victoria_metrics, RELAY_JOB)
        relayed = split_target_labels(stored)
        difference = diff_series(dict.fromkeys(expected, ""), dict.fromkeys(relayed, ""))
        assert not difference, f"{difference}\nvmagent log:\n{agent.log_tail()}"
        assert names_of(split_target_labels(own)) >= SELF_METRICS, names_of(own)
        assert upstream.requests
        assert all(request.query.get("hosting") == "true" for request in upstream.requests)


# --- Prometheus --------------------------------------------------------------------------------------------


@pytest.mark.peer
@pytest.mark.fixtures
@pytest.mark.timeout(180)
async def test_prometheus_scrapes_the_relay_with_the_shipped_config(
    tmp_path: Path, protection: Protection | None
):
    """Prometheus 2.42 with the shipped config for the listener (targets on a real relay of a real mTLS
    upstream; plain, or protected as deploy/overlays/protected does it): both jobs up, every relayed series
    stored, the relay's own metrics stored and its upstream reported up."""
    binary = require_tool("prometheus")
    async with contextlib.AsyncExitStack() as stack:
        upstream, relay = await stack.enter_async_context(relay_of_fixture(tmp_path, protection))
        scrape_config = scrape_config_for(scrape_config_name("prometheus", protection), relay, protection)
        prometheus = await stack.enter_async_context(
            running_prometheus(binary, scrape_config, tmp_path / "prometheus")
        )
        await prometheus.wait_until_up([RELAYED_JOB, RELAY_JOB], within=60)
        # metrics_relay_upstream_up has a value once the relay finished a scrape of its upstream; wait until
        # a scrape of the relay's own metrics came after one.
        async with asyncio.timeout(STORED_WITHIN_SECONDS):
            while True:
                if await prometheus.query(UPSTREAM_REPORTED_UP, time.time()):
                    break
                await asyncio.sleep(0.5)
        session = await stack.enter_async_context(client_session(protection))
        expected = await relayed_series(session, relay)
        at = time.time()
        relayed = split_target_labels(set(await prometheus.stored_series(RELAYED_JOB, at)))
        difference = diff_series(dict.fromkeys(expected, ""), dict.fromkeys(relayed, ""))
        assert not difference, difference
        own = await prometheus.stored_series(RELAY_JOB, at)
        assert names_of(split_target_labels(set(own))) >= SELF_METRICS, names_of(own)
        upstream_up = {
            dict(series).get("upstream"): value
            for series, value in own.items()
            if dict(series)["__name__"] == "metrics_relay_upstream_up"
        }
        assert upstream_up == {"ack-control-plane": "1"}
        assert upstream.requests
        assert all(request.query.get("hosting") == "true" for request in upstream.requests)


# --- the protected set-up, from the READMEs ---------------------------------------------------------------


def serving_certificate_command(readme: Path) -> list[str]:
    """The `openssl req` command a README gives for the relay's serving certificate, as an argument list."""
    text = readme.read_text(encoding="utf-8")
    found = re.findall(r"^ *openssl req -x509 (?:.*\\\n)*.*$", text, re.MULTILINE)
    assert len(found) == 1, f"{readme} should show one `openssl req -x509` command, shows {len(found)}"
    return shlex.split(found[0].replace("\\\n", " "))


@pytest.mark.peer
@pytest.mark.timeout(120)
async def test_prometheus_trusts_the_serving_certificate_the_readmes_make(tmp_path: Path):
    """The self-signed certificate made by the READMEs' openssl command (the same in both) serves the
    shipped web.yml, and Prometheus 2.42 with prometheus-protected.yml and that certificate as its CA trusts
    it for the shipped target's host name: both jobs up."""
    commands = [serving_certificate_command(ROOT / name) for name in ("README.md", "deploy/README.md")]
    assert commands[0] == commands[1]
    openssl, prometheus_binary = require_tool("openssl"), require_tool("prometheus")
    made = await asyncio.to_thread(
        subprocess.run,
        [openssl, *commands[0][1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    certificate = tmp_path / "relay.crt"
    protection = protect_like_the_overlay(
        tmp_path / "protected", certificate, tmp_path / "relay.key", ca_file=certificate
    )
    pki = Pki(tmp_path)
    async with (
        running_upstream(pki.server_context(), body_handler(INBOUND_BODY)) as upstream,
        running_relay(
            config_yaml(upstream.url, pki.client_files()),
            tmp_path,
            web_config_file=protection.web_config_file,
        ) as relay,
    ):
        document = yaml.safe_load(scrape_config_for("prometheus-protected.yml", relay, protection))
        for job in document["scrape_configs"]:
            # The shipped target's host, which the test's 127.0.0.1 target cannot have: checked by name.
            job["tls_config"]["server_name"] = SHIPPED_TARGET_HOST
        async with running_prometheus(
            prometheus_binary, yaml.safe_dump(document), tmp_path / "prometheus"
        ) as prometheus:
            await prometheus.wait_until_up([RELAYED_JOB, RELAY_JOB], within=60)
