"""One pass over an upstream for a flight: fetch once, relabel while streaming, publish, count once."""

from __future__ import annotations

import asyncio
import logging

from relay.errors import DeadlineExceededError, RelayInternalError, ScrapeError
from relay.flight import Flight
from relay.negotiation import Preferences, response_content_type
from relay.overlap import relabel_stream
from relay.pipeline import BodyRelabeler, body_relabeler
from relay.rules import Rules
from relay.runtime import Runtime
from relay.upstream import UpstreamClient

log = logging.getLogger(__name__)


async def upstream_pass(
    flight: Flight, runtime: Runtime, client: UpstreamClient, rules: Rules, preferences: Preferences
) -> None:
    """Fetch the upstream and publish the relabeled body to the flight; raises ScrapeError.

    The pass runs under the upstream's configured timeout, the upper bound of every scraper's deadline:
    each scraper enforces its own, and the pass is cancelled when the last one has left.
    """
    relabeler: BodyRelabeler = body_relabeler(rules)
    timeout = client.config.timeout
    try:
        async with (
            asyncio.timeout(timeout),
            client.fetch(timeout, openmetrics=preferences.openmetrics) as body,
        ):
            utf8_names = preferences.utf8_names and not body.openmetrics
            relabeler = body_relabeler(rules, openmetrics=body.openmetrics, utf8_names=utf8_names)
            flight.content_type = response_content_type(body.openmetrics, utf8_names)
            await relabel_stream(relabeler, body.chunks(), flight.publish)
    except ScrapeError:
        raise
    except TimeoutError:
        raise DeadlineExceededError(f"upstream timeout of {timeout:g}s exceeded") from None
    except Exception as exc:
        log.exception("unexpected error while relaying", extra={"upstream": client.config.name})
        raise RelayInternalError(f"internal error of the relay ({type(exc).__name__}); see its log") from exc
    finally:
        runtime.record_upstream_pass(rules, relabeler)
