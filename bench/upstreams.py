"""In-process mTLS upstreams on 127.0.0.1: a fixed body that counts its requests, and a generated stream."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class CountingUpstream:
    """A running upstream: its URL, how many requests reached /metrics, how many body bytes it sent."""

    url: str = ""
    requests: int = 0
    bytes_sent: int = 0


@asynccontextmanager
async def serving_body(context: ssl.SSLContext, body: bytes) -> AsyncIterator[CountingUpstream]:
    """Serve `body` (with a Content-Length) at /metrics over mTLS, counting requests."""
    upstream = CountingUpstream()

    async def handle(_request: web.Request) -> web.Response:
        upstream.requests += 1
        upstream.bytes_sent += len(body)
        return web.Response(body=body, headers={"Content-Type": EXPOSITION_CONTENT_TYPE})

    async with _serving(context, handle) as url:
        upstream.url = url
        yield upstream


@asynccontextmanager
async def serving_stream(
    context: ssl.SSLContext, chunks: Callable[[], Iterable[bytes]]
) -> AsyncIterator[CountingUpstream]:
    """Serve a body made on the fly by `chunks()` (chunked, no Content-Length) at /metrics over mTLS."""
    upstream = CountingUpstream()

    async def handle(request: web.Request) -> web.StreamResponse:
        upstream.requests += 1
        response = web.StreamResponse(headers={"Content-Type": EXPOSITION_CONTENT_TYPE})
        await response.prepare(request)
        for chunk in chunks():
            await response.write(chunk)  # waits while the relay reads slower than we write
            upstream.bytes_sent += len(chunk)
        await response.write_eof()
        return response

    async with _serving(context, handle) as url:
        upstream.url = url
        yield upstream


@asynccontextmanager
async def _serving(context: ssl.SSLContext, handler: Callable[[web.Request], object]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/metrics", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}/metrics"
    finally:
        await runner.cleanup()
