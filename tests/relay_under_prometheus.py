"""A real relay of a real mTLS upstream, scraped by a real Prometheus: where alerts and dashboard run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.prometheus_oracle import Prometheus, prometheus_config, running_prometheus, scrape_job
from tests.support import (
    Pki,
    Relay,
    Upstream,
    body_handler,
    config_yaml,
    require_tool,
    running_relay,
    running_upstream,
)

SCRAPE_INTERVAL_SECONDS = 1.0
# What Grafana puts for $__rate_interval: four scrape intervals at least.
RATE_INTERVAL_SECONDS = 4 * SCRAPE_INTERVAL_SECONDS
UPSTREAM_NAME = "ack-control-plane"
UPSTREAM_BODY = (
    b"# TYPE apiserver_requests_total counter\n"
    b'apiserver_requests_total{code="200"} 1027\n'
    b'apiserver_requests_total{code="500"} 3\n'
    b"# TYPE go_goroutines gauge\ngo_goroutines 181\n"
)
# One rule, so that the dropped-samples series have something to count.
UPSTREAM_RULES = (
    "    metric_relabel_configs:\n      - {source_labels: [__name__], regex: go_.*, action: drop}\n"
)
# The relay's own metrics, and the relayed body (whose scrapes make the relay scrape the upstream).
JOBS = {"relay": "/relay/metrics", "relayed": "/metrics"}


@dataclass
class RelayUnderPrometheus:
    """The running upstream (its `handler` can be swapped), the relay and the Prometheus scraping it."""

    upstream: Upstream
    relay: Relay
    prometheus: Prometheus


@contextlib.asynccontextmanager
async def relay_under_prometheus(
    directory: Path, rule_files: Sequence[Path] = ()
) -> AsyncIterator[RelayUnderPrometheus]:
    """Start all three; once both jobs are up and a few rate intervals of scrapes are stored, yield them.

    `rule_files` are loaded into Prometheus and evaluated every scrape interval.
    Skips without the prometheus binary (fails under CI).
    """
    binary = require_tool("prometheus")
    pki = Pki(directory)
    async with contextlib.AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(
            running_upstream(pki.server_context(), body_handler(UPSTREAM_BODY))
        )
        config = config_yaml(upstream.url, pki.client_files(), extra=UPSTREAM_RULES, name=UPSTREAM_NAME)
        relay = await stack.enter_async_context(running_relay(config, directory))
        target = relay.base_url.removeprefix("http://")
        jobs = [
            scrape_job(name, target, path, interval_seconds=SCRAPE_INTERVAL_SECONDS)
            for name, path in JOBS.items()
        ]
        document = yaml.safe_load(prometheus_config(jobs))
        document["global"]["evaluation_interval"] = f"{round(SCRAPE_INTERVAL_SECONDS * 1000)}ms"
        document["rule_files"] = [str(path) for path in rule_files]
        prometheus = await stack.enter_async_context(
            running_prometheus(binary, yaml.safe_dump(document, sort_keys=False), directory / "prometheus")
        )
        await prometheus.wait_until_up(JOBS, within=30)
        # Enough stored scrapes for a rate over the rate interval to have two samples to work on.
        await asyncio.sleep(2 * RATE_INTERVAL_SECONDS)
        yield RelayUnderPrometheus(upstream, relay, prometheus)
