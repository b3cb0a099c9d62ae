"""The demo's Metrics Aggregator stand-in: the simulated control plane's /metrics behind mutual TLS.

It answers OpenMetrics to a client that prefers it (the relay asks so when its own scraper does) and the text
format otherwise, and writes the relay configuration for itself, with rules in the style of kube-prometheus'
control-plane ServiceMonitors so that drops and changes have something to show.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from relay.demo.families import ControlPlaneSimulation
from relay.demo.pki import DemoPKI, write_demo_pki
from relay.negotiation import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, scraper_preferences

log = logging.getLogger(__name__)

CONTENT_TYPE = TEXT_CONTENT_TYPE
UPSTREAM_NAME = "ack-control-plane"
DROPPED_SERIES = 'apiserver_storage_objects{resource="pods"}'
"""A series of the demo that its rules drop (the deprecated family), to trace on /relay/relabel."""
# The demo's metric_relabel_configs, written into its configuration as they are, comments included.
# Each rule acts on families the simulated control plane exports; the comments say why a user would want it.
DEMO_RULES = r"""    metric_relabel_configs:
      # kube-apiserver's request latency has 24 buckets for every verb, resource, scope and component.
      # Keep the bounds that the usual API server latency SLOs compare against (1, 5 and 30 seconds),
      # the low ones that quantiles of fast requests need, 10, 60 and +Inf; drop the rest. OpenMetrics
      # writes whole bounds as floats (le="2.0"), hence the optional ".0": one rule for both formats.
      - source_labels: [__name__, le]
        regex: 'apiserver_request_duration_seconds_bucket;(0\.[2468]|1\.25|1\.5|2|3|4|6|8|15|20|45)(\.0)?'
        action: drop

      # Work queue latency has eleven buckets, ten decades wide, for every queue of every component.
      # Without the finite ones _sum and _count still give the average wait and work time;
      # kubernetes-mixin's controller dashboards draw a p99 from these buckets, so leave this rule out if
      # you use those. The +Inf bucket stays (\d matches the first character of every finite bound only):
      # it equals _count, and a histogram without it is one that strict OpenMetrics parsers refuse.
      - source_labels: [__name__, le]
        regex: 'workqueue_(queue|work)_duration_seconds_bucket;\d.*'
        action: drop

      # One histogram per scheduler extension point and status: detail for profiling the scheduler, not
      # for watching it; scheduler_scheduling_attempt_duration_seconds times the whole attempt. The +Inf
      # bucket stays, as above.
      - source_labels: [__name__, le]
        regex: 'scheduler_framework_extension_point_duration_seconds_bucket;\d.*'
        action: drop

      # Deprecated since Kubernetes 1.34: apiserver_resource_objects carries the same counts, with the
      # API group in a label of its own.
      - source_labels: [__name__]
        regex: apiserver_storage_objects
        action: drop

      # rest_client_* name the address each component dials: the internal SLB (loopback for
      # kube-apiserver itself). Each component dials one, and a new SLB address would start new series for
      # the same client. labeldrop acts on every family; here only rest_client_* have a `host` label.
      - action: labeldrop
        regex: host
"""
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
                DEMO_RULES,
            )
        )

    def relay_links(self, relay_url: str) -> tuple[tuple[str, str], ...]:
        """What to open on the relay for this aggregator, serving at `relay_url`: each URL, what it shows."""
        return (
            (f"{relay_url}/", "landing page: the upstream, its last scrape, links"),
            (f"{relay_url}/metrics", "the relayed control-plane metrics, the demo's rules applied"),
            (f"{relay_url}/relay/debug/relabel/{UPSTREAM_NAME}", "what each rule did to one fresh scrape"),
            (
                f"{relay_url}/relay/relabel?series={quote(DROPPED_SERIES, safe='')}",
                "one series through every rule: a deprecated one, dropped",
            ),
            (f"{relay_url}/relay/metrics", "the relay's own metrics"),
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
    """The stand-in's routes: GET /metrics?hosting=true for clients with a certificate the CA signed.

    The answer is OpenMetrics when the Accept header prefers it, as from a relay whose scraper does.
    """

    async def metrics(request: web.Request) -> web.Response:
        # Authentication comes first, as in kube-apiserver: a stranger learns nothing about the API.
        if not _has_verified_client_certificate(request):
            return web.Response(status=401, text="Unauthorized")
        if request.query.get("hosting") != "true":
            return web.Response(
                status=400,
                text="the Metrics Aggregator serves control-plane metrics only with the query hosting=true\n",
            )
        openmetrics = scraper_preferences(request.headers.get("Accept", "")).openmetrics
        return web.Response(
            body=simulation.exposition(clock(), openmetrics=openmetrics),
            headers={"Content-Type": OPENMETRICS_CONTENT_TYPE if openmetrics else CONTENT_TYPE},
        )

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
