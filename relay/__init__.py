"""metrics-relay: scrape a client-certificate-protected /metrics over mTLS, relabel it, serve it on HTTP."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("metrics-relay")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
