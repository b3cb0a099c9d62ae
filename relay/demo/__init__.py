"""The embedded Metrics Aggregator stand-in behind `metrics-relay --demo`: PKI, simulated metrics, server."""

from __future__ import annotations

from relay.demo.aggregator import (
    CONTENT_TYPE,
    DROPPED_SERIES,
    UPSTREAM_NAME,
    DemoAggregator,
    create_app,
    running_aggregator,
    server_ssl_context,
)
from relay.demo.families import ControlPlaneSimulation
from relay.demo.pki import DemoPKI, write_demo_pki

__all__ = [
    "CONTENT_TYPE",
    "DROPPED_SERIES",
    "UPSTREAM_NAME",
    "ControlPlaneSimulation",
    "DemoAggregator",
    "DemoPKI",
    "create_app",
    "running_aggregator",
    "server_ssl_context",
    "write_demo_pki",
]
