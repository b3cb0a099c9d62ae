"""The Python floor: a plain aiohttp streaming proxy (HTTP in, mTLS out, no parsing), run as a process.

`python -m bench.passthrough PORT UPSTREAM_URL CA CERT KEY` serves UPSTREAM_URL's body on
http://127.0.0.1:PORT/metrics, chunk for chunk as it arrives, on uvloop when present: what the relay would
cost if relabeling were free.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

import aiohttp
from aiohttp import web

SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM_KEY = web.AppKey("upstream", str)
TLS_KEY = web.AppKey("tls", ssl.SSLContext)


async def relay_body(request: web.Request) -> web.StreamResponse:
    """Stream the upstream's body to the client unchanged."""
    app = request.app
    async with app[SESSION_KEY].get(app[UPSTREAM_KEY], ssl=app[TLS_KEY]) as upstream:
        response = web.StreamResponse(headers={"Content-Type": upstream.headers["Content-Type"]})
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def serve(port: int, upstream_url: str, tls: ssl.SSLContext) -> None:
    """Serve until the process is terminated."""
    app = web.Application()
    app[UPSTREAM_KEY] = upstream_url
    app[TLS_KEY] = tls
    app[SESSION_KEY] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
    app.router.add_get("/metrics", relay_body)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def main(argv: list[str]) -> None:
    """Parse the five positional arguments and serve."""
    port, upstream_url, ca_file, cert_file, key_file = argv
    tls = ssl.create_default_context(cafile=ca_file)
    tls.load_cert_chain(cert_file, key_file)
    try:
        import uvloop  # noqa: PLC0415 - optional, as in the relay
    except ImportError:
        asyncio.run(serve(int(port), upstream_url, tls))
    else:
        uvloop.run(serve(int(port), upstream_url, tls))


if __name__ == "__main__":
    main(sys.argv[1:])
