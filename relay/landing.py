"""The HTML landing page: each upstream, its latest scrape and links (no secrets, everything escaped)."""

from __future__ import annotations

import time
from html import escape
from urllib.parse import quote

from relay import __version__
from relay.health import ScrapeOutcome
from relay.runtime import Runtime, Upstream
from relay.units import format_duration

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; } th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; }
.ok { color: #176317; } .failed { color: #a11; } code { font-size: 90%; }
"""


def render(runtime: Runtime) -> str:
    """The whole page for the current state of `runtime`."""
    rows = "\n".join(_row(index, upstream) for index, upstream in enumerate(runtime.upstreams.values()))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>metrics-relay</title><style>{_STYLE}</style></head>
<body>
<h1>metrics-relay</h1>
<p>Version {escape(__version__)}. Relays Prometheus metrics from client-certificate-protected endpoints.</p>
<table>
<tr><th>upstream</th><th>URL</th><th>relayed at</th><th>latest scrape</th></tr>
{rows}
</table>
<p><a href="relay/metrics">relay's own metrics</a> · <a href="-/healthy">healthy</a> ·
<a href="-/ready">ready</a></p>
</body></html>
"""


def _row(index: int, upstream: Upstream) -> str:
    name = upstream.name
    path = f"metrics/{quote(name)}"
    links = f'<a href="{path}">/{escape(path)}</a>'
    if index == 0:
        links = f'<a href="metrics">/metrics</a>, {links}'
    return (
        f"<tr><td>{escape(name)}</td><td><code>{escape(upstream.config.url)}</code></td>"
        f"<td>{links}</td><td>{_outcome(upstream.health.last_scrape)}</td></tr>"
    )


def _outcome(outcome: ScrapeOutcome | None) -> str:
    if outcome is None:
        return "not scraped yet"
    ago = format_duration(max(0.0, time.time() - outcome.at))
    took = format_duration(outcome.duration)
    if outcome.ok:
        return f'<span class="ok">ok</span>, {outcome.relayed_bytes} bytes in {took}, {ago} ago'
    failed = f'<span class="failed">failed ({escape(outcome.reason)})</span>'
    return f"{failed}: {escape(outcome.explanation)}, {ago} ago"
