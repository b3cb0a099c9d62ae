"""A scraper that times one body: time to first byte, total time, size and checksum; it keeps nothing."""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class Scrape:
    """One scrape's outcome: whether the body came whole, its timings, size and CRC-32."""

    ok: bool
    status: int
    first_byte_seconds: float
    total_seconds: float
    size: int
    crc32: int
    error: str = ""


async def scrape(session: aiohttp.ClientSession, url: str, *, keep: list[bytes] | None = None) -> Scrape:
    """GET `url` and read the body to its end; a broken body is ok=False, never an exception.

    Chunks are appended to `keep` when it is given (to compare whole bodies)."""
    started = time.perf_counter()
    first_byte = 0.0
    size = 0
    crc = 0
    status = 0
    try:
        async with session.get(url) as response:
            status = response.status
            async for chunk in response.content.iter_any():
                if not size:
                    first_byte = time.perf_counter() - started
                size += len(chunk)
                crc = zlib.crc32(chunk, crc)
                if keep is not None:
                    keep.append(chunk)
    except (aiohttp.ClientError, OSError) as exc:
        total = time.perf_counter() - started
        return Scrape(False, status, first_byte, total, size, crc, f"{type(exc).__name__}: {exc}")
    total = time.perf_counter() - started
    return Scrape(
        status == 200, status, first_byte, total, size, crc, "" if status == 200 else f"HTTP {status}"
    )
