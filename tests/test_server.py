"""The relay's own endpoints: health, readiness, its self-metrics (text, OpenMetrics, promtool) and reload."""

from __future__ import annotations

import subprocess

from relay import pipeline
from tests.support import (
    ClientFiles,
    body_handler,
    config_yaml,
    request_text,
    require_tool,
    running_relay,
    running_upstream,
)

BODY = b"# TYPE up gauge\nup 1\n"


async def test_health_ready_and_self_metrics(pki, tmp_path):
    """/-/healthy and /-/ready answer 200, and /relay/metrics shows build info and per-reason counters."""
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        assert (await request_text(f"{relay.base_url}/-/healthy"))[0] == 200
        assert (await request_text(f"{relay.base_url}/-/ready"))[0] == 200
        status, content_type, text = await request_text(f"{relay.base_url}/relay/metrics")
        relay.runtime.shutting_down = True
        assert (await request_text(f"{relay.base_url}/-/ready"))[0] == 503
    assert status == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert f'engine="{pipeline.default_engine}"' in next(
        line for line in text.splitlines() if line.startswith("metrics_relay_build_info{")
    )
    assert 'metrics_relay_scrape_failures_total{reason="tls",upstream="test"} 0.0' in text
    assert "metrics_relay_client_certificate_expiry_timestamp_seconds" in text
    assert "_created" not in text
    assert "\nprocess_" not in text  # only the prefixed process metrics, never colliding names


async def test_self_metrics_pass_promtool(pki, tmp_path):
    """promtool check metrics finds nothing wrong in /relay/metrics."""
    promtool = require_tool("promtool")
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        await request_text(f"{relay.base_url}/metrics")
        _, _, text = await request_text(f"{relay.base_url}/relay/metrics")
    result = subprocess.run(  # noqa: ASYNC221 - the relay is done; nothing else runs on the loop
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == b""


async def test_self_metrics_in_openmetrics_on_request(pki, tmp_path):
    """A scraper asking for OpenMetrics gets it, ending with # EOF."""
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, pki.client_files()), tmp_path) as relay,
    ):
        _, content_type, text = await request_text(
            f"{relay.base_url}/relay/metrics", Accept="application/openmetrics-text; version=1.0.0"
        )
    assert content_type.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")


async def test_reload_applies_a_good_file_and_keeps_the_old_one_on_error(pki, tmp_path):
    """POST /-/reload adds a new upstream and keeps the memo when only the timeout changed; a broken file
    gives 500 with the error and changes nothing."""
    files = pki.client_files()
    async with (
        running_upstream(pki.server_context(), body_handler(BODY)) as upstream,
        running_relay(config_yaml(upstream.url, files), tmp_path) as relay,
    ):
        assert (await request_text(f"{relay.base_url}/metrics/second"))[0] == 404
        assert (await request_text(f"{relay.base_url}/metrics/test"))[0] == 200
        two = (
            config_yaml(upstream.url, files)
            + config_yaml(upstream.url, files, name="second").split("\n", 1)[1]
        )
        relay.config_path.write_text(two)
        assert (await request_text(f"{relay.base_url}/-/reload", "POST"))[:1] == (200,)
        assert (await request_text(f"{relay.base_url}/metrics/second"))[2] == BODY.decode()

        relay.config_path.write_text(two + "    colour: red\n")
        status, _, text = await request_text(f"{relay.base_url}/-/reload", "POST")
        assert status == 500
        assert "upstreams[1].colour: unknown key" in text
        assert (await request_text(f"{relay.base_url}/metrics/second"))[2] == BODY.decode()
        _, _, metrics = await request_text(f"{relay.base_url}/relay/metrics")
        assert "metrics_relay_config_last_reload_successful 0.0" in metrics

        memo = relay.runtime.upstreams["test"].rules
        assert memo.memo_entries > 0
        relay.config_path.write_text(two.replace("name: test\n", "name: test\n    timeout: 7s\n", 1))
        assert (await request_text(f"{relay.base_url}/-/reload", "POST"))[:1] == (200,)
        assert relay.runtime.upstreams["test"].client.config.timeout == 7
        assert relay.runtime.upstreams["test"].rules is memo  # only the timeout changed: the memo is kept

        missing = ClientFiles(*(tmp_path / "missing" / name for name in ("ca.crt", "tls.crt", "tls.key")))
        relay.config_path.write_text(config_yaml(upstream.url, missing, name="second"))
        status, _, text = await request_text(f"{relay.base_url}/-/reload", "POST")
        assert status == 500
        assert f'upstreams[0].tls_config.ca_file: "{missing.ca_file}": cannot read' in text
        assert (await request_text(f"{relay.base_url}/metrics/test"))[0] == 200
