"""The demo's Metrics Aggregator stand-in: the simulated control plane's /metrics behind mutual TLS."""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from relay.demo.families import ControlPlaneSimulation
from relay.demo.pki import DemoPKI, write_demo_pki

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UPSTREAM_NAME = "ack-control-plane"
# Addresses that mean "every interface" are reached through loopback, which the server certificate names.
_WILDCARD_TO_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 -- a lookup


@dataclass(frozen=True, slots=True)
class DemoAggregator:
    """A running stand-in: where to scrape it and the certificate files that get in."""

    url: str
    pki: DemoPKI

    def relay_config_yaml(self) -> str:
        """A complete metrics-relay configuration with one upstream, this aggregator."""
        # JSON strings are YAML double-quoted scalars, so any path or URL is quoted correctly.
        return "\n".join(
            (
                "upstreams:",
                f"  - name: {UPSTREAM_NAME}",
                f"    url: {json.dumps(self.url)}",
                "    params:",
                '      hosting: ["true"]',
                "    timeout: 10s",
                "    tls_config:",
                f"      ca_file: {json.dumps(str(self.pki.ca_cert))}",
                f"      cert_file: {json.dumps(str(self.pki.client_cert))}",
                f"      key_file: {json.dumps(str(self.pki.client_key))}",
                "    metric_relabel_configs: []",
                "",
            )
        )


@asynccontextmanager
async def running_aggregator(
    directory: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    simulation: ControlPlaneSimulation | None = None,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[DemoAggregator]:
    """Write fresh demo certificates into `directory`, serve /metrics over mTLS until the block ends.

    Port 0 lets the OS choose a free port; the URL in the yielded value has the real one.
    """
    pki = write_demo_pki(directory)
    app = create_app(simulation or ControlPlaneSimulation(), clock)
    # The relay's scrapes are the demo's interesting log lines; the stand-in keeps no access log.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=server_ssl_context(pki))
        await site.start()
        bound_port = runner.addresses[0][1]
        aggregator = DemoAggregator(url=_metrics_url(host, bound_port), pki=pki)
        log.info("demo metrics aggregator listening", extra={"url": aggregator.url})
        yield aggregator
    finally:
        await runner.cleanup()


def server_ssl_context(pki: DemoPKI) -> ssl.SSLContext:
    """TLS for the stand-in: its server certificate; client certificates checked against the demo CA.

    Client certificates are optional at the TLS level so that a client without one gets an HTTP 401,
    as from kube-apiserver, instead of a handshake failure. One from another CA still fails the handshake.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def create_app(simulation: ControlPlaneSimulation, clock: Callable[[], float] = time.time) -> web.Application:
    """The stand-in's routes: GET /metrics?hosting=true for clients with a certificate the CA signed."""

    async def metrics(request: web.Request) -> web.Response:
        # Authentication comes first, as in kube-apiserver: a stranger learns nothing about the API.
        if not _has_verified_client_certificate(request):
            return web.Response(status=401, text="Unauthorized")
        if request.query.get("hosting") != "true":
            return web.Response(
                status=400,
                text="the Metrics Aggregator serves control-plane metrics only with the query hosting=true\n",
            )
        return web.Response(body=simulation.exposition(clock()), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


def _has_verified_client_certificate(request: web.Request) -> bool:
    """Whether the TLS client presented a certificate; with CERT_OPTIONAL only verified ones get here."""
    transport = request.transport
    return transport is not None and bool(transport.get_extra_info("peercert"))


def _metrics_url(host: str, port: int) -> str:
    """https://host:port/metrics, with wildcard addresses replaced by loopback and IPv6 in brackets."""
    address = _WILDCARD_TO_LOOPBACK.get(host, host)
    if ":" in address:
        address = f"[{address}]"
    return f"https://{address}:{port}/metrics"
