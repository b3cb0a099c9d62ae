"""The fetch of one upstream over (m)TLS: request, status and Content-Type checks, streamed body, size limit.

The caller owns the deadline (one `asyncio.timeout` around fetch and relay together), so that a trickling
upstream cannot outlive it; every failure reaching the caller is a ScrapeError that explains itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict

from relay import __version__
from relay.config import UpstreamConfig
from relay.errors import ScrapeError, UpstreamConnectError
from relay.failures import (
    Attempt,
    PresentedCertificate,
    connect_timeout_error,
    content_type_error,
    limit_error,
    status_error,
    translate_client_error,
)
from relay.negotiation import answer_is_openmetrics, upstream_accept
from relay.tls import Credentials, CredentialSource

log = logging.getLogger(__name__)

USER_AGENT = f"metrics-relay/{__version__}"
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
MAX_CONCURRENT_REQUESTS = 4
"""Requests to one upstream at once. Concurrent scrapes share one (flight.py); more than one runs only for
scrapes in different formats or joining too late to replay, so a few is plenty, and the bound keeps a crowd
of scrapers from becoming a crowd of requests to the control plane."""
_BODY_SNIPPET_BYTES = 200
_SNIPPET_CHARACTERS = 120
# Fetching the certificate of an upstream that failed verification, to say why, may take this long at most.
_PROBE_SECONDS = 2.0


@dataclass(slots=True)
class UpstreamBody:
    """The body of a good upstream answer, as decompressed chunks, with the size limit applied."""

    response: aiohttp.ClientResponse
    openmetrics: bool  # the answer's format: OpenMetrics 1.0, or else the text format 0.0.4
    body_size_limit: int
    attempt: Attempt
    received: int = 0

    @property
    def wire_bytes(self) -> int:
        """Bytes of the body received so far as they came over the wire, before decompression."""
        return self.response.content.total_raw_bytes

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
            raise translate_client_error(exc, self.attempt) from exc

    def _count(self, size: int) -> None:
        self.received += size
        if self.body_size_limit and self.received > self.body_size_limit:
            raise limit_error(
                f"upstream body exceeds body_size_limit ({self.body_size_limit} bytes)",
                setting="body_size_limit",
                value=f"{self.body_size_limit} bytes",
            )


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
        self._request_slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)

    @asynccontextmanager
    async def fetch(
        self, deadline_seconds: float, *, openmetrics: bool = False
    ) -> AsyncIterator[UpstreamBody]:
        """Send the request and check the answer's head; yield its body. Raises ScrapeError.

        `openmetrics`: ask for OpenMetrics first (the text format is still accepted). At most
        MAX_CONCURRENT_REQUESTS requests to the upstream run at once; a further one waits for its turn
        (within the caller's deadline).
        """
        async with self._request_slots, self._fetch(deadline_seconds, openmetrics) as body:
            yield body

    @asynccontextmanager
    async def _fetch(self, deadline_seconds: float, openmetrics: bool) -> AsyncIterator[UpstreamBody]:
        credentials = self.credentials.current()
        headers = self._headers(credentials, deadline_seconds, upstream_accept(openmetrics))
        unreachable: list[tuple[Attempt, ScrapeError]] = []
        urls = self.config.urls
        # With several addresses, one that never answers must not take the whole deadline: each gets a share
        # of it to connect (TCP only; the answer itself may take the rest).
        connect_budget = deadline_seconds / len(urls) if len(urls) > 1 else None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_budget)
        for url in urls:
            attempt = self.attempt(credentials, url)
            try:
                response = await self._session.get(
                    url,
                    params=self.config.params or None,
                    headers=headers,
                    ssl=credentials.ssl_context if credentials.ssl_context is not None else True,
                    server_hostname=self.config.tls_config.server_name,
                    allow_redirects=False,
                    timeout=timeout,
                )
            except aiohttp.ClientConnectorCertificateError as exc:
                presented = await presented_certificate(attempt)
                raise translate_client_error(exc, replace(attempt, presented=presented)) from exc
            except Exception as exc:
                error = (
                    connect_timeout_error(attempt, connect_budget)
                    if isinstance(exc, aiohttp.ConnectionTimeoutError) and connect_budget is not None
                    else translate_client_error(exc, attempt)
                )
                if not isinstance(error, UpstreamConnectError):
                    raise error from exc
                unreachable.append((attempt, error))
                if len(unreachable) < len(self.config.urls):
                    log.info(
                        "upstream address unreachable; trying the next of failover_urls",
                        extra={
                            "upstream": self.config.name,
                            "address": attempt.address,
                            "error": error.message,
                        },
                    )
                    continue
                raise _none_reachable(unreachable) from exc
            break
        async with response:
            answered_openmetrics = await self._check_head(response, credentials, attempt, openmetrics)
            yield UpstreamBody(response, answered_openmetrics, self.config.body_size_limit, attempt)

    def attempt(self, credentials: Credentials, url_text: str | None = None) -> Attempt:
        """What a request with `credentials` to `url_text` (by default `url`) tries, for the explanation of
        its failure."""
        url = urlsplit(url_text or self.config.url)
        tls = self.config.tls_config
        secure = url.scheme == "https"
        return Attempt(
            host=url.hostname or "",
            port=url.port or (443 if secure else 80),
            tls=secure,
            ca_file=str(tls.ca_file) if tls.ca_file is not None else "",
            server_name=tls.server_name or "",
            refusal=credentials.refusal_hint(tls.cert_file),
        )

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
        self, response: aiohttp.ClientResponse, credentials: Credentials, attempt: Attempt, openmetrics: bool
    ) -> bool:
        """Raise unless the answer is a 200 in a format the relay asked for; whether it is OpenMetrics."""
        if response.status != 200:
            raise status_error(
                response.status,
                response.reason or "",
                path=response.url.path_qs,
                attempt=attempt,
                body_start=await _snippet(response, credentials),
                location=response.headers.get("Location", "").partition("?")[0],
            )
        content_type = response.headers.get("Content-Type", "")
        answered_openmetrics = answer_is_openmetrics(content_type, openmetrics)
        if answered_openmetrics is None:
            raise content_type_error(content_type, upstream_accept(openmetrics), address=attempt.address)
        return answered_openmetrics


def _none_reachable(unreachable: list[tuple[Attempt, ScrapeError]]) -> ScrapeError:
    """The last address's error, or one naming every address tried when there were several."""
    last = unreachable[-1][1]
    if len(unreachable) == 1:
        return last
    tried = "; ".join(f"{attempt.address}: {error.message}" for attempt, error in unreachable)
    return UpstreamConnectError(
        f"no address of the upstream could be reached ({tried})",
        "; ".join(error.detail for _, error in unreachable),
        cause=last.cause,
        action=f"{last.action} (url and failover_urls are tried in order)" if last.action else "",
    )


async def _snippet(response: aiohttp.ClientResponse, credentials: Credentials) -> str:
    """The first line of an error body, for the log only (a scraper never sees the upstream's body)."""
    try:
        start = await response.content.read(_BODY_SNIPPET_BYTES)
    except (aiohttp.ClientError, OSError):
        return ""
    text = start.decode("utf-8", errors="replace").strip().partition("\n")[0]
    if credentials.authorization is not None:  # an upstream may echo the request's headers
        token = credentials.authorization.removeprefix("Bearer ")
        text = text.replace(token, "<redacted>")
    return text[:_SNIPPET_CHARACTERS]  # cut after redacting: a cut token would not be found


async def presented_certificate(attempt: Attempt) -> PresentedCertificate | None:
    """The certificate the upstream presents, fetched without verifying it; None if it cannot be had.

    Only for explaining a failed verification (which names, which issuer): nothing is sent over the
    connection. A TLS 1.2 server that requires a client certificate ends this handshake first: None.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(_PROBE_SECONDS):
            _, writer = await asyncio.open_connection(
                attempt.host, attempt.port, ssl=context, server_hostname=attempt.checked_name
            )
    except (OSError, TimeoutError):
        return None
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if isinstance(ssl_object, ssl.SSLObject) else None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    if not der:
        return None
    try:
        return PresentedCertificate.from_der(der)
    except ValueError:
        return None
