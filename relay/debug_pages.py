"""The relabel debugging pages: `/relay/relabel` (one series' trace) and `/relay/debug/relabel/<name>`.

The second scrapes the live upstream once, through its client and credentials, and summarises what each
rule does to that body. Pages are plain HTML with no external assets, every value escaped; curl gets text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from html import escape
from urllib.parse import quote, urlencode

from aiohttp import web

from relay.errors import RelayInternalError, ScrapeError
from relay.failures import deadline_error
from relay.negotiation import MediaRange, parse_media_ranges
from relay.relabel_report import (
    BodySummarizer,
    RuleSummary,
    Summary,
    left_out_text,
    render_summary,
    summary_json,
)
from relay.relabel_trace import (
    SeriesTrace,
    format_labels,
    label_changes,
    parse_series_argument,
    render_trace,
    trace_json,
    trace_series,
)
from relay.rules import Rules
from relay.runtime import Runtime, Upstream

log = logging.getLogger(__name__)

BATCH_BYTES = 1 << 20
"""Body bytes summarised per hop to a worker thread, so that a big body does not hold up the event loop."""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.dropped { color: #a11; } .kept { color: #176317; } code, pre { font-size: 90%; }
input[type=text] { width: 40em; }
"""


def add_routes(app: web.Application, runtime: Runtime) -> None:
    """Serve the relabel debugging pages of `runtime` on `app`."""
    pages = _Pages(runtime)
    app.router.add_get("/relay/relabel", pages.relabel_trace)
    app.router.add_get("/relay/debug/relabel/{name}", pages.relabel_summary)


def prefers_html(accept: str) -> bool:
    """Whether an Accept header ranks text/html above text/plain (a browser; curl sends `*/*`)."""
    ranges = parse_media_ranges(accept)
    return _quality(ranges, "text/html") > _quality(ranges, "text/plain")


def _quality(ranges: list[MediaRange], media_type: str) -> float:
    """The q value the most specific matching range gives `media_type` (0 when none matches)."""
    patterns = (media_type, media_type.partition("/")[0] + "/*", "*/*")
    for pattern in patterns:
        qualities = [media.quality for media in ranges if media.media_type == pattern]
        if qualities:
            return max(qualities)
    return 0.0


class _Pages:
    """The handlers, bound to the runtime whose upstreams they show."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # A summary is a whole extra upstream request and a body read in full: one at a time is plenty for
        # a person at a page, and keeps a reloading browser from loading the upstream.
        self._summarizing = asyncio.Lock()

    async def relabel_trace(self, request: web.Request) -> web.Response:
        """`?upstream=NAME&series=SERIES`: what each rule does to one series (default: the first upstream)."""
        name = request.query.get("upstream")
        upstream = self.runtime.upstream(name)
        if upstream is None:
            return _plain(404, f"unknown upstream {name!r}")
        text = request.query.get("series", "")
        trace = None
        error = 'give the series to trace: ?series=name{a="b"} (or a line of /metrics)'
        if text:
            try:
                trace = trace_series(upstream.rules, *parse_series_argument(text))
                error = ""
            except ValueError as exc:
                error = f"series: {exc}"
        if trace is not None and request.query.get("format") == "json":
            return web.json_response(trace_json(trace), dumps=_dumps)
        if prefers_html(request.headers.get("Accept", "")):
            if not text:  # the form alone, to fill in
                return _html(200, _trace_page(self.runtime, upstream, text, None, ""))
            return _html(
                400 if trace is None else 200, _trace_page(self.runtime, upstream, text, trace, error)
            )
        if trace is None:
            return _plain(400, error)
        return web.Response(text=render_trace(trace), content_type="text/plain")

    async def relabel_summary(self, request: web.Request) -> web.Response:
        """One fresh scrape of the upstream, summarised per rule: HTML, `?format=json` or `?format=text`."""
        name = request.match_info["name"]
        upstream = self.runtime.upstream(name)
        answer = request.query.get("format", "html")
        if upstream is None:
            return _plain(404, f"unknown upstream {name!r}")
        if self._summarizing.locked():
            return _plain(503, "another relabel summary is running; try again when it has finished")
        started = time.monotonic()
        try:
            async with self._summarizing:
                summary = await _scrape_summary(upstream)
        except ScrapeError as exc:
            return _failure(upstream, exc, answer)
        took = time.monotonic() - started
        if answer == "json":
            return web.json_response(summary_json(summary), dumps=_dumps)
        if answer == "text":
            return web.Response(text=render_summary(summary), content_type="text/plain")
        return _html(200, _summary_page(upstream, summary, took))


async def _scrape_summary(upstream: Upstream) -> Summary:
    """Fetch the upstream once (its deadline, limits and credentials) and summarise the body.

    The rules are compiled afresh, so the summary runs in worker threads without touching the state that
    relayed scrapes use (memo, regex caches).
    """
    deadline = upstream.config.timeout
    try:
        async with asyncio.timeout(deadline), upstream.client.fetch(deadline) as body:
            summarizer = BodySummarizer(Rules.for_upstream(upstream.config), openmetrics=body.openmetrics)
            batch: list[bytes] = []
            size = 0
            async for chunk in body.chunks():
                batch.append(chunk)
                size += len(chunk)
                if size >= BATCH_BYTES:
                    await asyncio.to_thread(_feed, summarizer, batch)
                    batch, size = [], 0
            await asyncio.to_thread(_feed, summarizer, batch)
            return await asyncio.to_thread(summarizer.finish)
    except TimeoutError:
        raise deadline_error(deadline, configured=deadline) from None
    except ScrapeError:
        raise
    except Exception as exc:
        log.exception("unexpected error in the relabel debug page", extra={"upstream": upstream.name})
        raise RelayInternalError(f"internal error of the relay ({type(exc).__name__}); see its log") from exc


def _feed(summarizer: BodySummarizer, chunks: list[bytes]) -> None:
    for chunk in chunks:
        summarizer.feed(chunk)


def _failure(upstream: Upstream, error: ScrapeError, answer: str) -> web.Response:
    """A failed debug scrape: 502 or 504 with the failure's explanation (never the upstream's body)."""
    log.warning(
        "relabel debug scrape failed",
        extra={"upstream": upstream.name, "reason": error.reason, **error.log_fields()},
    )
    explanation = error.explanation()
    if answer == "json":
        document = {"upstream": upstream.name, "reason": error.reason, "error": explanation}
        return web.json_response(document, status=error.status, dumps=_dumps)
    if answer == "text":
        return _plain(
            error.status, f"scrape of upstream {upstream.name!r} failed ({error.reason}):\n{explanation}"
        )
    title = f"Relabel summary of {upstream.name}: the scrape failed"
    body = (
        f"<h1>{escape(title)}</h1>\n<p>Reason: <code>{escape(error.reason)}</code></p>\n"
        f"<pre>{escape(explanation)}</pre>\n{_links(upstream)}"
    )
    return _html(error.status, _page(title, body))


# --- HTML ------------------------------------------------------------------------------------------------


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _links(upstream: Upstream) -> str:
    """Links from /relay/debug/relabel/<name> (relative, so that a path prefix in front keeps working)."""
    name = quote(upstream.name, safe="")
    return (
        f'<p><a href="{name}?format=json">JSON</a> · <a href="{name}?format=text">text</a> · '
        f'<a href="../../relabel?{escape(urlencode({"upstream": upstream.name}))}">trace one series</a> · '
        f'<a href="../../../metrics/{name}">/metrics/{escape(upstream.name)}</a> · '
        '<a href="../../../">landing page</a></p>'
    )


def _summary_page(upstream: Upstream, summary: Summary, took: float) -> str:
    title = f"Relabel summary of {upstream.name}"
    left_out = left_out_text(summary) or "none"
    rows = "\n".join(_summary_row(rule) for rule in summary.rules)
    table = (
        "<table>\n<tr><th>rule</th><th>action</th><th>location</th><th>samples in</th><th>samples out</th>"
        f"<th>dropped</th><th>changed</th><th>top families affected</th></tr>\n{rows}\n</table>"
        if summary.rules
        else "<p>No metric_relabel_configs: every valid series passes unchanged.</p>"
    )
    warnings = "".join(f'<p class="dropped">{escape(warning)}</p>\n' for warning in summary.warnings)
    body = f"""<h1>{escape(title)}</h1>
<p>One fresh scrape of <code>{escape(upstream.config.query_url())}</code>
({"OpenMetrics" if summary.openmetrics else "text format"}, {took:.2f} s).</p>
<p><strong>{summary.samples_in}</strong> samples in, <strong>{summary.samples_out}</strong> relayed;
left out: {escape(left_out)}.</p>
{warnings}{table}
{_links(upstream)}"""
    return _page(title, body)


def _summary_row(rule: RuleSummary) -> str:
    families = "<br>".join(
        f"<code>{escape(family.name)}</code>: {family.counts()}" for family in rule.families
    )
    numbers = "".join(
        f'<td class="n">{count}</td>'
        for count in (rule.samples_in, rule.samples_out, rule.dropped, rule.changed)
    )
    return (
        f"<tr><td>{rule.rule.index}</td><td>{escape(rule.rule.action)}</td>"
        f"<td><code>{escape(rule.rule.where())}</code></td>{numbers}<td>{families or '-'}</td></tr>"
    )


def _trace_page(
    runtime: Runtime, upstream: Upstream, text: str, trace: SeriesTrace | None, error: str
) -> str:
    title = f"Relabel trace for {upstream.name}"
    options = "".join(
        f"<option{' selected' if name == upstream.name else ''}>{escape(name)}</option>"
        for name in runtime.upstreams
    )
    form = f"""<form method="get" action="relabel">
<label>upstream <select name="upstream">{options}</select></label>
<label>series <input type="text" name="series" value="{escape(text)}"
 placeholder='name{{a="b"}}, {{__name__="name"}} or a line of /metrics'></label>
<button type="submit">trace</button></form>"""
    parts = [f"<h1>{escape(title)}</h1>", form]
    if error:
        parts.append(f'<p class="dropped">{escape(error)}</p>')
    if trace is not None:
        parts.append(_trace_table(trace))
    return _page(title, "\n".join(parts))


def _trace_table(trace: SeriesTrace) -> str:
    rows = [f'<tr><td colspan="3">input</td><td><code>{escape(format_labels(trace.series))}</code></td></tr>']
    for step in trace.steps:
        if step.after is None:
            effect = '<span class="dropped">dropped</span>'
        elif step.changed:
            effect = (
                f"<code>{escape(label_changes(step.before, step.after))}</code><br>"
                f"now <code>{escape(format_labels(step.after))}</code>"
            )
        else:
            effect = "unchanged"
        rows.append(
            f"<tr><td>{step.rule.index}</td><td>{escape(step.rule.action)}</td>"
            f"<td><code>{escape(step.rule.where())}</code></td><td>{effect}</td></tr>"
        )
    unreached = trace.rule_count - len(trace.steps)
    if unreached:
        rows.append(f'<tr><td colspan="4">{unreached} later rule(s) not reached</td></tr>')
    verdict_class = "kept" if trace.result is not None and not trace.not_relayed else "dropped"
    return (
        "<table>\n<tr><th>rule</th><th>action</th><th>location</th><th>effect</th></tr>\n"
        + "\n".join(rows)
        + f'\n</table>\n<p>Verdict: <span class="{verdict_class}">{escape(trace.verdict)}</span></p>'
    )


def _html(status: int, page: str) -> web.Response:
    return web.Response(status=status, text=page, content_type="text/html")


def _plain(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain")


def _dumps(document: object) -> str:
    return json.dumps(document, ensure_ascii=False)
