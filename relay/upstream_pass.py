"""One pass over an upstream for a flight: fetch once, relabel while streaming, publish, report once."""

from __future__ import annotations

import asyncio
import logging
import time

from relay.errors import RelayInternalError, ScrapeError
from relay.failures import deadline_error
from relay.flight import Flight
from relay.health import PassReport
from relay.negotiation import Preferences, response_content_type
from relay.overlap import relabel_stream
from relay.pipeline import BodyRelabeler, body_relabeler
from relay.recorder import Recorder
from relay.rules import Rules
from relay.upstream import UpstreamBody, UpstreamClient

log = logging.getLogger(__name__)


async def upstream_pass(
    flight: Flight, client: UpstreamClient, rules: Rules, preferences: Preferences, recorder: Recorder
) -> None:
    """Fetch the upstream and publish the relabeled body to the flight; raises ScrapeError.

    The pass runs under the upstream's configured timeout, the upper bound of every scraper's deadline:
    each scraper enforces its own, and the pass is cancelled when the last one has left.
    """
    relabeler: BodyRelabeler = body_relabeler(rules)
    body: UpstreamBody | None = None
    timeout = client.config.timeout
    started = time.monotonic()
    ok = False
    try:
        async with (
            asyncio.timeout(timeout),
            client.fetch(timeout, openmetrics=preferences.openmetrics) as body,
        ):
            utf8_names = preferences.utf8_names and not body.openmetrics
            relabeler = body_relabeler(rules, openmetrics=body.openmetrics, utf8_names=utf8_names)
            flight.content_type = response_content_type(body.openmetrics, utf8_names)
            await relabel_stream(relabeler, body.chunks(), flight.publish)
        ok = True
    except ScrapeError:
        raise
    except TimeoutError:
        raise deadline_error(timeout, configured=timeout) from None
    except Exception as exc:
        log.exception("unexpected error while relaying", extra={"upstream": client.config.name})
        raise RelayInternalError(f"internal error of the relay ({type(exc).__name__}); see its log") from exc
    finally:
        recorder.upstream_pass(
            PassReport(
                at=time.time(),
                duration=time.monotonic() - started,
                ok=ok,
                samples_in=relabeler.samples_in,
                samples_out=relabeler.samples_out,
                dropped=dict(relabeler.dropped),
                memo_misses=relabeler.memo_misses,
                memo_entries=rules.memo_entries,
                received_bytes=body.wire_bytes if body is not None else 0,
                decompressed_bytes=body.received if body is not None else 0,
            )
        )
