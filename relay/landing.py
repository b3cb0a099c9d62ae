"""The HTML landing page: each upstream's address, health, credentials and rules, and links (no secrets)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

from relay import __version__, pipeline
from relay.health import PassReport, ScrapeOutcome
from relay.runtime import ReloadStatus, Runtime, Upstream
from relay.tls import CredentialSource

EXPIRY_WARNING_SECONDS = 7 * 86400  # as deploy/alerts.yaml: a certificate expiring sooner needs a hand

_STYLE = """
:root { color-scheme: light; --ok: #1a7f37; --bad: #c62828; --warn: #9a6700; --muted: #5f6b7a; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1f2328; background: #f6f8fa; }
header { background: #24292f; color: #fff; padding: .9em 2em; }
header h1 { margin: 0; font-size: 1.35em; } header p { margin: .2em 0 0; color: #c9d1d9; }
header a { color: #9ecbff; }
header code { background: #3d444d; color: #fff; } header nav { margin-top: .4em; }
header .bad { color: #ff8182; font-weight: 600; }
main { padding: 1.2em 2em; max-width: 64em; }
section { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: .2em 1.2em .9em;
  margin-bottom: 1.2em; }
h2 { font-size: 1.15em; display: flex; gap: .6em; align-items: baseline; }
dl { display: grid; grid-template-columns: 11em 1fr; gap: .3em 1em; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
code { font: 13px/1.4 ui-monospace, monospace; background: #eff1f3; padding: .1em .3em; border-radius: 4px; }
pre { font: 13px/1.45 ui-monospace, monospace; white-space: pre-wrap; margin: .4em 0 0; padding: .5em .7em;
  color: #1f2328; background: #fff5f5; border-left: 3px solid var(--bad); }
.badge { font-size: .8em; font-weight: 600; padding: .1em .6em; border-radius: 1em; }
.badge.ok, .badge.bad, .badge.unknown { color: #fff; } .badge.ok { background: var(--ok); }
.badge.bad { background: var(--bad); } .badge.unknown { background: var(--muted); }
.ok { color: var(--ok); } .bad { color: var(--bad); } .warn { color: var(--warn); }
.muted { color: var(--muted); }
nav a { margin-right: 1.2em; }
"""


def render(runtime: Runtime, now: float | None = None) -> str:
    """The whole page for the current state of `runtime`, its times told relative to `now` (default: now)."""
    at = time.time() if now is None else now
    sections = "\n".join(
        _upstream_section(upstream, first=index == 0, now=at)
        for index, upstream in enumerate(runtime.upstreams.values())
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>metrics-relay</title><style>{_STYLE}</style></head>
<body>
<header><h1>metrics-relay</h1>
<p>Version {escape(__version__)}, {escape(pipeline.default_engine)} line engine. {_summary(runtime)}</p>
{_reload_status(runtime, at)}
<nav><a href="relay/metrics">the relay's own metrics</a><a href="-/healthy">healthy</a>
<a href="-/ready">ready</a></nav></header>
<main>
{sections}
</main>
</body></html>
"""


# --- formatting for people ------------------------------------------------------------------------------


def relative_time(moment: float, now: float) -> str:
    """`moment` as a person reads it, seen from `now`: "just now", "2 min ago", "in 12 days"."""
    delta = moment - now
    if abs(delta) < 1:
        return "just now"
    span = _span(abs(delta))
    return f"in {span}" if delta > 0 else f"{span} ago"


def _span(seconds: float) -> str:
    for unit, size in (("year", 365 * 86400), ("day", 86400)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def human_duration(seconds: float) -> str:
    """How long something took: "340 ms", "2.5 s", "1 min 5 s"."""
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def human_bytes(count: int) -> str:
    """A size in bytes, with a base-2 unit above a kibibyte: "512 B", "4.2 KiB", "31 MiB"."""
    if count < 1024:
        return f"{count} B"
    units = ("B", "KiB", "MiB", "GiB")
    power = min(len(units) - 1, int(math.log(count, 1024)))
    size = count / 1024**power
    return f"{size:.1f} {units[power]}" if size < 10 else f"{size:.0f} {units[power]}"


def _moment(timestamp: float, now: float, css: str = "") -> str:
    """A relative time, with the exact UTC time as a tooltip and in the DOM."""
    exact = datetime.fromtimestamp(timestamp, UTC)
    attributes = f' datetime="{exact:%Y-%m-%dT%H:%M:%SZ}" title="{exact:%Y-%m-%d %H:%M:%S} UTC"'
    if css:
        attributes += f' class="{css}"'
    return f"<time{attributes}>{escape(relative_time(timestamp, now))}</time>"


# --- the parts of the page --------------------------------------------------------------------------------


def _summary(runtime: Runtime) -> str:
    outcomes = [upstream.health.last_scrape for upstream in runtime.upstreams.values()]
    counts = {
        "up": sum(1 for outcome in outcomes if outcome is not None and outcome.ok),
        "failing": sum(1 for outcome in outcomes if outcome is not None and not outcome.ok),
        "not scraped yet": outcomes.count(None),
    }
    parts = ", ".join(f"{count} {state}" for state, count in counts.items() if count)
    total = len(outcomes)
    return f"{total} upstream{'' if total == 1 else 's'}: {parts}." if total else "No upstreams."


def _reload_status(runtime: Runtime, now: float) -> str:
    status: ReloadStatus | None = runtime.reload_status
    path = f"<code>{escape(str(runtime.config_path))}</code>"
    if status is None:
        return f"<p>Configuration {path}: not loaded yet.</p>"
    if status.ok:
        return f"<p>Configuration {path}: last reload successful, {_moment(status.at, now)}.</p>"
    return (
        f'<p>Configuration {path}: <span class="bad">the last reload failed</span> {_moment(status.at, now)};'
        f" the running configuration stays in use.</p><pre>{escape(status.error)}</pre>"
    )


def _upstream_section(upstream: Upstream, *, first: bool, now: float) -> str:
    name = upstream.name
    health = upstream.health
    rows = [
        ("URL", f"<code>{escape(upstream.config.query_url())}</code>"),
        ("last scrape", _scrape_text(health.last_scrape, now)),
        ("upstream request", _pass_text(health.last_pass, now)),
        ("memo hit rate", _memo_text(health.last_pass)),
        ("client certificate", _certificate_text(upstream.client.credentials, now)),
        ("CA certificate", _ca_text(upstream.client.credentials, now)),
        ("credentials", _credential_state(upstream.client.credentials, now)),
        ("relabel rules", _rule_text(len(upstream.config.metric_relabel_configs))),
        ("links", _links(name, first=first)),
    ]
    items = "\n".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
    return (
        f'<section id="upstream-{escape(name)}"><h2>{escape(name)} {_badge(health.last_scrape)}</h2>\n'
        f"<dl>\n{items}\n</dl></section>"
    )


def _badge(outcome: ScrapeOutcome | None) -> str:
    if outcome is None:
        return '<span class="badge unknown">not scraped yet</span>'
    if outcome.ok:
        return '<span class="badge ok">up</span>'
    return f'<span class="badge bad">failing: {escape(outcome.reason)}</span>'


def _scrape_text(outcome: ScrapeOutcome | None, now: float) -> str:
    if outcome is None:
        return '<span class="muted">none since the relay started</span>'
    when = _moment(outcome.at, now)
    took = human_duration(outcome.duration)
    if outcome.ok:
        return f'<span class="ok">ok</span> {when}, {human_bytes(outcome.relayed_bytes)} in {took}'
    how = "aborted after part of the body was sent" if outcome.aborted else "failed"
    return (
        f'<span class="bad">{how} ({escape(outcome.reason)})</span> {when}, after {took}'
        f'<pre class="explanation">{escape(outcome.explanation)}</pre>'
    )


def _pass_text(report: PassReport | None, now: float) -> str:
    if report is None:
        return '<span class="muted">none yet</span>'
    result = '<span class="ok">ok</span>' if report.ok else '<span class="bad">failed</span>'
    dropped = sum(report.dropped.values())
    return (
        f"{result} {_moment(report.at, now)}, {report.samples_in:,} samples in, {report.samples_out:,} out"
        f" ({dropped:,} dropped), {human_bytes(report.received_bytes)} received in"
        f" {human_duration(report.duration)}"
    )


def _memo_text(report: PassReport | None) -> str:
    ratio = None if report is None else report.memo_hit_ratio
    if report is None or ratio is None:
        return '<span class="muted">no samples yet</span>'
    return f"{ratio:.1%} of the samples' series were known ({report.memo_entries:,} series remembered)"


def _expiry(not_after: datetime, now: float) -> str:
    seconds_left = not_after.timestamp() - now
    css = "bad" if seconds_left <= 0 else "warn" if seconds_left < EXPIRY_WARNING_SECONDS else ""
    verb = "expired" if seconds_left <= 0 else "expires"
    return f"{verb} {_moment(not_after.timestamp(), now, css)} ({not_after:%Y-%m-%d %H:%M} UTC)"


def _certificate_text(source: CredentialSource, now: float) -> str:
    credentials = source.last_good
    if credentials is None:
        return '<span class="muted">not loaded</span>'
    if credentials.certificate is None:
        return '<span class="muted">none configured</span>'
    facts = credentials.certificate
    return f"<code>{escape(facts.subject)}</code>, {_expiry(facts.not_after, now)}"


def _ca_text(source: CredentialSource, now: float) -> str:
    credentials = source.last_good
    if credentials is None:
        return '<span class="muted">not loaded</span>'
    if credentials.ssl_context is None:
        return "none (plain HTTP)"
    if credentials.ca_not_after is None:
        return "the system's CAs"
    return _expiry(credentials.ca_not_after, now)


def _credential_state(source: CredentialSource, now: float) -> str:
    if source.last_good is None:
        return '<span class="bad">not loaded</span>: no usable set yet (the last scrape says why)'
    loaded = "" if source.loaded_at is None else f" {_moment(source.loaded_at, now)}"
    if source.refused is not None:
        return (
            f'<span class="warn">rotation refused</span>: {escape(source.refused.message)};'
            f" the last good set (loaded{loaded}) stays in use"
        )
    certificate = source.last_good.certificate
    problem = certificate.problem_at(datetime.fromtimestamp(now, UTC)) if certificate else ""
    if problem:
        return f'loaded{loaded}, but <span class="bad">{escape(problem)}</span>'
    return f'<span class="ok">loaded</span>{loaded}'


def _rule_text(count: int) -> str:
    if count == 0:
        return "none: the body is relayed as received"
    return f"{count} metric_relabel_configs rule{'' if count == 1 else 's'}"


def _links(name: str, *, first: bool) -> str:
    """Relative links, so that the page works behind a path prefix."""
    quoted = quote(name, safe="")
    links = [
        (f"metrics/{quoted}", f"/metrics/{name}"),
        (f"relay/debug/relabel/{quoted}", "relabel summary of a fresh scrape"),
        (f"relay/relabel?upstream={quoted}", "trace a series"),
    ]
    if first:
        links.insert(0, ("metrics", "/metrics"))
    return " · ".join(f'<a href="{escape(href)}">{escape(text)}</a>' for href, text in links)
