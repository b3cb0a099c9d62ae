"""The relay path end to end over real TLS: good bodies, every upstream failure, and how each is signalled."""

from __future__ import annotations

import asyncio
import datetime
import ssl

import aiohttp
import pytest
import trustme
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    Pki,
    body_handler,
    config_yaml,
    require_fixtures,
    running_relay,
    running_upstream,
    trickle,
)

pytestmark = pytest.mark.usefixtures("engine")

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BODY = b"# HELP demo_requests_total Requests.\n# TYPE demo_requests_total counter\n" + b"".join(
    b'demo_requests_total{code="%d",path="/p\\"%d"} %d\n' % (code, i, i * code)
    for code in (200, 404, 500)
    for i in range(10000)
)
"""A canonical exposition (one space, sorted labels, no comments): relayed unchanged without rules."""


async def scrape(url: str, **headers: str) -> tuple[int, str, bytes]:
    """GET `url` as a scraper would; the status, Content-Type and the whole body."""
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.read()


async def scrape_expecting_abort(url: str) -> bytes:
    """GET `url` and read until the connection breaks; fail if the body ends cleanly."""
    received = bytearray()

    async def read_all(response: aiohttp.ClientResponse) -> None:
        async for chunk in response.content.iter_any():
            received.extend(chunk)

    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_all(response)
    return bytes(received)


async def test_good_body_is_relayed_byte_for_byte(pki, tmp_path):
    """A 200 from the upstream reaches the scraper unchanged, with the exact text Content-Type."""
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        status, content_type, body = await scrape(f"{relay.base_url}/metrics")
        assert (status, content_type) == (200, TEXT_CONTENT_TYPE)
        assert body == BODY
        status, _, body = await scrape(f"{relay.base_url}/metrics/test")
        assert (status, body) == (200, BODY)


def samples(body: bytes) -> set[tuple[str, frozenset[tuple[str, str]], float | str]]:
    """The samples of an exposition as prometheus_client reads them, empty label values left out."""
    return {
        (sample.name, frozenset((k, v) for k, v in sample.labels.items() if v), repr(sample.value))
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


async def test_real_fixture_is_relayed_without_rules_unchanged(pki, tmp_path):
    """A real kube-apiserver exposition (several MB), valid as it is, goes out byte for byte without rules."""
    body = (require_fixtures() / "kube-apiserver-1.35-minikube.prom").read_bytes()
    async with (
        running_upstream(pki.server_context(), body_handler(body)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        status, content_type, relayed = await scrape(f"{relay.base_url}/metrics")
    assert (status, content_type) == (200, TEXT_CONTENT_TYPE)
    assert samples(relayed) == samples(body)
    assert b'=""' in body
    assert relayed == body


async def test_request_carries_params_accept_and_timeout(pki, tmp_path):
    """params reach the query string; Accept asks for text 0.0.4; the timeout is announced upstream."""
    extra = '    params:\n      hosting: ["true"]\n      x: ["1", "2"]\n    timeout: 7s\n'
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files(), extra), tmp_path) as relay,
    ):
        await scrape(f"{relay.base_url}/metrics", **{"X-Prometheus-Scrape-Timeout-Seconds": "5"})
        request = upstream.requests[-1]
        assert request.query.getall("hosting") == ["true"]
        assert request.query.getall("x") == ["1", "2"]
        assert request.headers["Accept"] == "text/plain;version=0.0.4"
        # The upstream pass may serve later scrapes too: it has the configured timeout, their upper bound.
        assert request.headers["X-Prometheus-Scrape-Timeout-Seconds"] == "7"
        assert request.headers["User-Agent"].startswith("metrics-relay/")
        assert "Authorization" not in request.headers


async def test_bearer_token_is_sent_and_never_shown(pki, tmp_path, caplog):
    """The token file's content goes upstream as a Bearer header and nowhere else."""
    token = "s3cr3t-token-value"
    (tmp_path / "token").write_text(token + "\n")
    extra = f"    bearer_token_file: {tmp_path / 'token'}\n"
    caplog.set_level("DEBUG")
    async with (
        running_upstream(pki.server_context(), body_handler(b"", status=403)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files(), extra), tmp_path) as relay,
    ):
        status, _, body = await scrape(f"{relay.base_url}/metrics")
        landing = await scrape(f"{relay.base_url}/")
        self_metrics = await scrape(f"{relay.base_url}/relay/metrics")
    assert upstream.requests[-1].headers["Authorization"] == f"Bearer {token}"
    assert status == 502
    for text in (body, landing[2], self_metrics[2], caplog.text.encode()):
        assert token.encode() not in text


async def test_no_client_certificate_is_a_502_naming_the_refusal(pki, tmp_path):
    """An upstream that requires a client certificate and gets none fails the scrape with a TLS reason."""
    files = pki.client_files()
    extra = f"    tls_config:\n      ca_file: {files.ca_file}\n"
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, extra=extra), tmp_path) as relay,
    ):
        status, content_type, body = await scrape(f"{relay.base_url}/metrics")
    assert status == 502
    assert content_type.startswith("text/plain")
    assert b"refuse the client certificate" in body
    assert b"no client certificate is configured" in body


async def test_kube_apiserver_style_401_is_a_502_naming_the_status(pki, tmp_path):
    """An upstream that asks for a certificate optionally and answers 401 gives a 502 naming HTTP 401."""
    files = pki.client_files()
    extra = f"    tls_config:\n      ca_file: {files.ca_file}\n"

    async def unauthorized(request: web.Request) -> web.StreamResponse:
        if request.transport is not None and request.transport.get_extra_info("peercert"):
            return web.Response(body=BODY)
        return web.Response(status=401, text="Unauthorized upstream body")

    async with (
        running_upstream(pki.server_context(ssl.CERT_OPTIONAL), unauthorized) as upstream,
        running_relay(config_yaml(upstream.url, extra=extra), tmp_path) as relay,
    ):
        status, _, body = await scrape(f"{relay.base_url}/metrics")
    assert status == 502
    assert b"HTTP 401" in body
    assert b"Unauthorized upstream body" not in body


async def test_certificate_from_another_ca_is_refused(pki, tmp_path):
    """A client certificate the upstream's CA did not sign fails the scrape with a TLS reason."""
    stranger = trustme.CA().issue_cert("stranger@test")
    files = pki.client_files("stranger", stranger)
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, files), tmp_path) as relay,
    ):
        status, _, body = await scrape(f"{relay.base_url}/metrics")
        assert status == 502
        assert b"check that the upstream trusts the CA that signed the client certificate" in body
        assert relay.runtime.upstreams["test"].health.last_scrape.reason == "tls"


async def test_expired_client_certificate_is_named_in_the_error(pki, tmp_path):
    """The relay checks its own certificate and says it expired when the upstream refuses it."""
    expired = pki.client_ca.issue_cert(
        "metrics-relay@test",
        not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC),
    )
    files = pki.client_files("expired", expired)
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, files), tmp_path) as relay,
    ):
        status, _, body = await scrape(f"{relay.base_url}/metrics")
    assert status == 502
    assert b"expired at 2021-01-01T00:00:00Z" in body


async def test_upstream_certificate_from_unknown_ca_is_not_trusted(pki, tmp_path):
    """A server certificate that ca_file does not vouch for fails verification, naming ca_file."""
    other = Pki(tmp_path / "other")
    (tmp_path / "other").mkdir()
    files = other.client_files()  # trusts another server CA
    files.cert_file, files.key_file = pki.client_files().cert_file, pki.client_files().key_file
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, files), tmp_path) as relay,
    ):
        status, _, body = await scrape(f"{relay.base_url}/metrics")
    assert status == 502
    assert b"not trusted" in body
    assert b"ca_file" in body


async def test_host_name_mismatch_suggests_server_name_which_fixes_it(tmp_path):
    """An SLB IP missing from the SANs fails with a hint to set server_name, and setting it works."""
    pki = Pki(tmp_path, server_identities=("kubernetes", "kubernetes.default.svc"))
    files = pki.client_files()
    async with running_upstream(pki.server_context(), body_handler(BODY)) as upstream:
        async with running_relay(config_yaml(upstream.url, files), tmp_path) as relay:
            status, _, body = await scrape(f"{relay.base_url}/metrics")
        assert status == 502
        assert b"server_name" in body
        fixed = config_yaml(upstream.url, files) + "      server_name: kubernetes\n"
        async with running_relay(fixed, tmp_path) as relay:
            assert await scrape(f"{relay.base_url}/metrics") == (200, TEXT_CONTENT_TYPE, BODY)


async def test_upstream_error_status_is_a_502_without_its_body(pki, tmp_path):
    """A 500 upstream gives a 502 that names the status and never shows the upstream's body."""
    async with (
        running_upstream(
            pki.server_context(), body_handler(b"internal SECRET detail", status=500)
        ) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        status, _, body = await scrape(f"{relay.base_url}/metrics")
    assert status == 502
    assert b"HTTP 500" in body
    assert b"SECRET" not in body


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "text/html; charset=utf-8",
        "text/plain; version=1.0.0",
        "application/openmetrics-text",
    ],
)
async def test_wrong_content_type_is_a_502(pki, tmp_path, content_type):
    """An answer that is not the text exposition format is refused with a content_type reason."""
    async with (
        running_upstream(pki.server_context(), body_handler(b"{}", content_type)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        status, _, body = await scrape(f"{relay.base_url}/metrics")
        assert status == 502
        assert b"Content-Type" in body
        assert relay.runtime.upstreams["test"].health.last_scrape.reason == "content_type"


async def test_connection_refused_is_a_502(pki, tmp_path):
    """Nothing listening upstream gives a 502 saying the connection was refused."""
    async with running_upstream(pki.server_context(), body_handler(BODY)) as upstream:
        url = upstream.url  # the port is free again once the upstream stops
    async with running_relay(config_yaml(url, pki.client_files()), tmp_path) as relay:
        status, _, body = await scrape(f"{relay.base_url}/metrics")
    assert status == 502
    assert b"refused" in body


async def test_unresolvable_host_is_a_502(pki, tmp_path):
    """A host name that does not resolve gives a 502 (or 504 if resolution outlives the deadline)."""
    config = config_yaml("https://relay-test.invalid:6443/metrics", pki.client_files(), "    timeout: 3s\n")
    async with running_relay(config, tmp_path) as relay:
        status, _, body = await scrape(f"{relay.base_url}/metrics")
    assert status in (502, 504)
    assert b"resolve" in body or b"deadline" in body


async def test_slow_head_is_a_504(pki, tmp_path):
    """An upstream that does not answer within the deadline gives a 504 naming the deadline."""

    async def never(_request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    async with (
        running_upstream(pki.server_context(), never) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files(), "    timeout: 10s\n"), tmp_path) as relay,
    ):
        started = asyncio.get_running_loop().time()
        status, _, body = await scrape(
            f"{relay.base_url}/metrics", **{"X-Prometheus-Scrape-Timeout-Seconds": "1"}
        )
        elapsed = asyncio.get_running_loop().time() - started
    assert status == 504
    assert b"deadline" in body
    assert b"the scraper allows 1s (X-Prometheus-Scrape-Timeout-Seconds" in body  # the cause is named
    assert elapsed < 5  # the scraper's 1 s header won over the configured 10 s


async def test_trickling_body_is_aborted_at_the_deadline(pki, tmp_path, caplog):
    """Bytes already sent when the deadline passes: the scraper sees a broken body, not a clean end; the log
    and the metrics say how far it got."""

    async def slow(request: web.Request) -> web.StreamResponse:
        return await trickle(request, BODY[:1000], pause=0.05)

    async with (
        running_upstream(pki.server_context(), slow) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files(), "    timeout: 1s\n"), tmp_path) as relay,
    ):
        received = await scrape_expecting_abort(f"{relay.base_url}/metrics")
        assert received  # the whole lines of the first 1000 bytes went out before the deadline
        assert BODY[:1000].startswith(received)
        assert relay.runtime.upstreams["test"].health.last_scrape.reason == "deadline"
        metrics = relay.runtime.metrics.registry
        aborted = metrics.get_sample_value("metrics_relay_scrapes_aborted_total", {"upstream": "test"})
    (failure,) = [record for record in caplog.records if record.getMessage() == "scrape failed"]
    assert failure.after_bytes == len(received)  # a field given in extra=
    assert aborted == 1


async def truncated_upstream(request: web.Request) -> web.StreamResponse:
    """An upstream that announces BODY's length, sends half of it and closes the connection."""
    response = web.StreamResponse(headers={"Content-Type": "text/plain; version=0.0.4"})
    response.content_length = len(BODY)
    await response.prepare(request)
    await response.write(BODY[: len(BODY) // 2])
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.close()
    return response


async def test_truncated_upstream_body_aborts_the_downstream(pki, tmp_path):
    """An upstream that closes before its Content-Length ends never yields a complete 200 downstream."""

    async with (
        running_upstream(pki.server_context(), truncated_upstream) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        received = await scrape_expecting_abort(f"{relay.base_url}/metrics")
        assert len(received) < len(BODY)
        assert relay.runtime.upstreams["test"].health.last_scrape.reason == "body"


async def test_body_size_limit_fails_the_scrape(pki, tmp_path):
    """A body larger than body_size_limit is refused: 502 if nothing was sent yet, abort otherwise."""
    extra = "    body_size_limit: 1KB\n"
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files(), extra), tmp_path) as relay,
    ):
        async with aiohttp.ClientSession() as session, session.get(f"{relay.base_url}/metrics") as response:
            if response.status == 200:
                with pytest.raises(aiohttp.ClientPayloadError):
                    await response.read()
            else:
                assert response.status == 502
                assert b"body_size_limit" in await response.read()
        assert relay.runtime.upstreams["test"].health.last_scrape.reason == "limit"


async def test_unknown_upstream_is_404(pki, tmp_path):
    """/metrics/<name> for a name not configured is a 404 naming it."""
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        status, _, body = await scrape(f"{relay.base_url}/metrics/nope")
    assert status == 404
    assert b"nope" in body


async def test_relay_survives_failures_and_counts_them(pki, tmp_path):
    """After a failed scrape the relay still serves, and /relay/metrics counts the failure by reason."""
    async with (
        running_upstream(pki.server_context(), body_handler(b"", status=503)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        assert (await scrape(f"{relay.base_url}/metrics"))[0] == 502
        upstream.handler = body_handler(BODY)
        assert (await scrape(f"{relay.base_url}/metrics"))[2] == BODY
        _, _, metrics = await scrape(f"{relay.base_url}/relay/metrics")
    text = metrics.decode()
    assert 'metrics_relay_scrape_failures_total{reason="http_status",upstream="test"} 1.0' in text
    assert 'metrics_relay_scrape_failures_total{reason="deadline",upstream="test"} 0.0' in text
    assert 'metrics_relay_scrapes_total{upstream="test"} 2.0' in text
    assert 'metrics_relay_upstream_up{upstream="test"} 1.0' in text


async def test_a_broken_body_resets_even_an_http_1_0_scraper(pki, tmp_path):
    """HTTP/1.0 has no chunked end marker: the relay resets the connection so a partial body is an error."""

    async with (
        running_upstream(pki.server_context(), truncated_upstream) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        host, port = relay.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: relay\r\n\r\n")
        await writer.drain()
        with pytest.raises(ConnectionResetError):
            await read_to_the_end(reader)
        writer.close()


async def read_to_the_end(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


@pytest.mark.parametrize(
    ("body", "reason", "message"),
    [
        (b"a 1 " + b"9" * 5000 + b"\n", "parse", b"at line 1 (byte 0), family a: timestamp out of range"),
        (b"ok 1\na 1_000\nlater 1\n", "parse", b"invalid exposition at line 2 (byte 5), family a:"),
    ],
)
async def test_invalid_bodies_are_counted_502s_without_the_upstream_text(
    pki, tmp_path, body, reason, message
):
    """A body Prometheus would refuse fails the scrape with reason parse; the 502 names the problem and where
    it is, with a short excerpt of the line, never the rest of the body."""
    async with (
        running_upstream(pki.server_context(), body_handler(body)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        status, _, answer = await scrape(f"{relay.base_url}/metrics")
        assert relay.runtime.upstreams["test"].health.last_scrape.reason == reason
    assert status == 502
    assert message in answer
    assert b"9" * 100 not in answer  # the excerpt stops after 80 characters
    assert b"later" not in answer


async def test_a_token_with_a_line_break_is_a_client_credentials_error(pki, tmp_path):
    """A token that cannot go into a header is refused as unusable credentials, not a crash."""
    (tmp_path / "token").write_text("abc\ndef\n")
    extra = f"    bearer_token_file: {tmp_path / 'token'}\n"
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files(), extra), tmp_path) as relay,
    ):
        status, _, answer = await scrape(f"{relay.base_url}/metrics")
    assert status == 502
    assert b"bearer_token_file: the token holds a line break" in answer
    assert b"abc" not in answer
