"""kube-apiserver's families in the simulated control plane: requests, their latency, stored objects."""

from __future__ import annotations

from dataclasses import dataclass

from relay.demo.dice import Dice
from relay.demo.textformat import Exemplar, LabelValues, Registry


@dataclass(frozen=True, slots=True)
class _ApiRequest:
    """A kind of request kube-apiserver serves: how often, how fast, and with which status codes."""

    verb: str
    resource: str
    rate: float
    median_seconds: float
    codes: tuple[tuple[str, float], ...] = (("200", 1.0),)
    group: str = ""
    version: str = "v1"
    scope: str = "resource"
    subresource: str = ""
    component: str = "apiserver"

    @property
    def labels(self) -> LabelValues:
        """component, dry_run, group, resource, scope, subresource, verb, version."""
        return (
            self.component,
            "",
            self.group,
            self.resource,
            self.scope,
            self.subresource,
            self.verb,
            self.version,
        )


def _non_resource(path: str, rate: float, median_seconds: float) -> _ApiRequest:
    """A GET of a path outside the API (health checks, /metrics), labelled the way kube-apiserver does."""
    return _ApiRequest("GET", "", rate, median_seconds, version="", scope="", subresource=path, component="")


_API_REQUESTS = (
    _ApiRequest("GET", "leases", 1.2, 0.003, group="coordination.k8s.io"),
    _ApiRequest("PUT", "leases", 1.2, 0.005, (("200", 0.998), ("409", 0.002)), group="coordination.k8s.io"),
    _ApiRequest("GET", "nodes", 0.4, 0.004, (("200", 0.97), ("404", 0.03))),
    _ApiRequest("PATCH", "nodes", 0.6, 0.007, subresource="status"),
    _ApiRequest("LIST", "pods", 0.05, 0.04, scope="cluster"),
    _ApiRequest("WATCH", "pods", 0.01, 0.0, scope="cluster"),
    _ApiRequest("POST", "pods", 0.4, 0.009, (("201", 1.0),), subresource="binding"),
    _ApiRequest("DELETE", "pods", 0.05, 0.012, (("200", 0.95), ("404", 0.05))),
    _ApiRequest("POST", "events", 0.3, 0.006, (("201", 1.0),), group="events.k8s.io"),
    _ApiRequest("GET", "services", 0.1, 0.003),
    _ApiRequest("PATCH", "services", 0.02, 0.008, (("200", 0.9), ("409", 0.1)), subresource="status"),
    _ApiRequest("LIST", "deployments", 0.02, 0.015, group="apps", scope="namespace"),
    _non_resource("/healthz", 0.2, 0.0012),
    _non_resource("/readyz", 0.5, 0.0015),
)
# The aggregator's own scrape of kube-apiserver: one per exposition, so consecutive bodies always differ.
# It is traced, so OpenMetrics bodies carry its exemplars.
_METRICS_REQUEST = _non_resource("/metrics", 0.0, 0.02)
# Stored objects: API group, resource, typical count.
_STORED_OBJECTS = (
    ("", "pods", 240),
    ("", "nodes", 12),
    ("events.k8s.io", "events", 900),
    ("coordination.k8s.io", "leases", 18),
)
# fmt: off
_APISERVER_BOUNDS = (
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 60,
)
# fmt: on


class ApiServer:
    """kube-apiserver: requests by verb, resource and code, their latency, inflight requests, objects."""

    def __init__(self, registry: Registry) -> None:
        labels = ("component", "dry_run", "group", "resource", "scope", "subresource", "verb", "version")
        self.requests = registry.counter(
            "apiserver_request_total",
            "[STABLE] Requests served, by verb, dry run, group, version, resource, scope, component "
            "and code.",
            ("code", *labels),
        )
        self.duration = registry.histogram(
            "apiserver_request_duration_seconds",
            "[STABLE] Response latency, by verb, dry run, group, version, resource, subresource, scope "
            "and component.",
            _APISERVER_BOUNDS,
            labels,
        )
        self.inflight = registry.gauge(
            "apiserver_current_inflight_requests",
            "[STABLE] Requests in flight in the last second, by kind.",
            ("request_kind",),
        )
        self.objects = registry.gauge(
            "apiserver_resource_objects",
            "[ALPHA] Objects stored, by group and resource; -1 if they could not be counted.",
            ("group", "resource"),
        )
        # What kube-apiserver 1.34 and later still export beside its successor, until it is removed.
        self.deprecated_objects = registry.gauge(
            "apiserver_storage_objects",
            "[STABLE] (Deprecated since 1.34.0) [DEPRECATED, consider using apiserver_resource_objects "
            "instead] Objects stored, by resource; -1 if they could not be counted.",
            ("resource",),
        )

    def step(self, dice: Dice, seconds: float, now: float) -> None:
        """Serve the requests of `seconds`, then the aggregator's request for /metrics at `now`."""
        for request in _API_REQUESTS:
            served = 0
            for code, share in request.codes:
                count = dice.events(request.rate * share, seconds)
                self.requests.add((code, *request.labels), count)
                served += count
            # Watches last as long as the client wants; kube-apiserver keeps them out of this latency.
            if request.verb != "WATCH":
                self.duration.observe(request.labels, served, dice.latency(request.median_seconds))
        trace_id = dice.trace_id()
        latency = dice.latency(_METRICS_REQUEST.median_seconds)()
        self.requests.add(("200", *_METRICS_REQUEST.labels), 1, Exemplar(trace_id, 1, now))
        self.duration.observe_traced(_METRICS_REQUEST.labels, Exemplar(trace_id, latency, now))
        self.inflight.set(("mutating",), dice.between(0, 3))
        self.inflight.set(("readOnly",), dice.between(1, 8))
        for group, resource, typical in _STORED_OBJECTS:
            count = typical + dice.between(0, typical // 20)
            self.objects.set((group, resource), count)
            # The deprecated family names a resource with its group after a dot, as `resource.group`.
            self.deprecated_objects.set((f"{resource}.{group}" if group else resource,), count)
