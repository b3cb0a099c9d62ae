"""The fetch of one upstream over (m)TLS: request, status and Content-Type checks, streamed body, size limit.

The caller owns the deadline (one `asyncio.timeout` around fetch and relay together), so that a trickling
upstream cannot outlive it; every failure reaching the caller is a ScrapeError naming its cause.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from relay import __version__
from relay.config import UpstreamConfig
from relay.errors import (
    LimitExceededError,
    ScrapeError,
    UpstreamContentTypeError,
    UpstreamStatusError,
    translate_client_error,
)
from relay.negotiation import answer_is_openmetrics, upstream_accept
from relay.tls import Credentials, CredentialSource

log = logging.getLogger(__name__)

USER_AGENT = f"metrics-relay/{__version__}"
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
_BODY_SNIPPET_BYTES = 200


@dataclass(slots=True)
class UpstreamBody:
    """The body of a good upstream answer, as decompressed chunks, with the size limit applied."""

    response: aiohttp.ClientResponse
    openmetrics: bool  # the answer's format: OpenMetrics 1.0, or else the text format 0.0.4
    body_size_limit: int
    refusal_hint: str
    received: int = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        """Chunks as they arrive; errors (broken body, limit) are raised as ScrapeError."""
        try:
            # iter_chunks() hands over each piece as it was received; iter_any() joins what is buffered.
            async for chunk, _ in self.response.content.iter_chunks():
                self._count(len(chunk))
                yield chunk
        except ScrapeError:
            raise
        except Exception as exc:
            raise translate_client_error(exc, refusal_hint=self.refusal_hint) from exc

    @property
    def wire_bytes(self) -> int:
        """Body bytes as they came over the wire: compressed, if the upstream compressed."""
        # aiohttp counts compressed bytes from 3.12 on; before, what it decompressed is all it tells.
        return int(getattr(self.response.content, "total_raw_bytes", self.received))

    def _count(self, size: int) -> None:
        self.received += size
        if self.body_size_limit and self.received > self.body_size_limit:
            raise LimitExceededError(f"upstream body exceeds body_size_limit ({self.body_size_limit} bytes)")


class UpstreamClient:
    """Fetches one configured upstream; holds its credential source across scrapes."""

    def __init__(
        self,
        config: UpstreamConfig,
        session: aiohttp.ClientSession,
        credentials: CredentialSource | None = None,
    ) -> None:
        self.config = config
        self.credentials = credentials or CredentialSource(config)
        self._session = session

    @asynccontextmanager
    async def fetch(
        self, deadline_seconds: float, *, openmetrics: bool = False
    ) -> AsyncIterator[UpstreamBody]:
        """Send the request and check the answer's head; yield its body. Raises ScrapeError.

        `openmetrics`: ask for OpenMetrics first (the text format is still accepted).
        """
        credentials = self.credentials.current()
        hint = credentials.refusal_hint()
        try:
            response = await self._session.get(
                self.config.url,
                params=self.config.params or None,
                headers=self._headers(credentials, deadline_seconds, upstream_accept(openmetrics)),
                ssl=credentials.ssl_context if credentials.ssl_context is not None else True,
                server_hostname=self.config.tls_config.server_name,
                allow_redirects=False,
            )
        except Exception as exc:
            raise translate_client_error(exc, refusal_hint=hint) from exc
        async with response:
            answered_openmetrics = await self._check_head(response, credentials, openmetrics)
            yield UpstreamBody(response, answered_openmetrics, self.config.body_size_limit, hint)

    def _headers(self, credentials: Credentials, deadline_seconds: float, accept: str) -> CIMultiDict[str]:
        headers = CIMultiDict(
            {
                "Accept": accept,
                "User-Agent": USER_AGENT,
                # Tells the upstream how long it has, as Prometheus does.
                SCRAPE_TIMEOUT_HEADER: f"{deadline_seconds:g}",
            }
        )
        if credentials.authorization is not None:
            headers["Authorization"] = credentials.authorization
        return headers

    async def _check_head(
        self, response: aiohttp.ClientResponse, credentials: Credentials, openmetrics: bool
    ) -> bool:
        """Raise unless the answer is a 200 in a format the relay asked for; whether it is OpenMetrics."""
        hint = credentials.refusal_hint()
        if response.status != 200:
            snippet = await _snippet(response)
            if credentials.authorization is not None:  # an upstream may echo the request's headers
                snippet = snippet.replace(credentials.authorization.encode(), b"<redacted>")
            message = f"upstream answered HTTP {response.status} {response.reason or ''}".rstrip()
            if response.status in (400, 401, 403):
                message += "; it did not accept the relay's credentials"
                if hint:
                    message += f" ({hint})"
            raise UpstreamStatusError(message, f"{message}; body starts {snippet!r}")
        content_type = response.headers.get("Content-Type", "")
        answered_openmetrics = answer_is_openmetrics(content_type, openmetrics)
        if answered_openmetrics is None:
            expected = upstream_accept(openmetrics)
            raise UpstreamContentTypeError(
                f"upstream Content-Type is {content_type or 'missing'!r}, expected {expected!r}"
            )
        return answered_openmetrics


async def _snippet(response: aiohttp.ClientResponse) -> bytes:
    """The start of an error body, for the log only (a scraper never sees the upstream's body)."""
    try:
        return await response.content.read(_BODY_SNIPPET_BYTES)
    except (aiohttp.ClientError, OSError):
        return b""
