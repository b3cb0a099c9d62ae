"""A simulated managed control plane's /metrics in Prometheus text format 0.0.4: pure, changing with time.

The families are modelled on what kube-apiserver, kube-scheduler and Alibaba Cloud's
cloud-controller-manager export. How the real Metrics Aggregator keeps the components apart is not
documented; this stand-in writes every family once and gives the ones several components export
(process_*, go_*, rest_client_*, workqueue_*, leader election) a `component` label.

Counters, histograms and summary sums only grow: time passing adds work, and every exposition counts
itself as a GET of /metrics. Some label values carry `"`, `\\` and newlines, which relays must keep
escaped.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

LabelValues = tuple[str, ...]
Draw = Callable[[], float]
F = TypeVar("F", bound="_Family")

# The most samples drawn for one series per step: a long step (the first one covers hours of uptime)
# spreads its observations over this many drawn values instead of drawing each one.
_MAX_DRAWS = 24
_MEDIAN_SPREAD = 0.6
_NORMAL_ENOUGH = 20.0


def escape_label_value(value: str) -> str:
    """A label value as the text format writes it between double quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """A HELP text as the text format writes it: only backslash and newline are escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as Go's client writes it: whole numbers without a fraction, and +Inf, -Inf, NaN."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if abs(value) < 1e15 and value == int(value):
        return str(int(value))
    return repr(value)


class _Family:
    """One metric family: name, HELP, TYPE, label names; subclasses hold the samples."""

    kind: ClassVar[str]

    def __init__(self, name: str, help_text: str, label_names: tuple[str, ...]) -> None:
        self.name = name
        self.help_text = help_text
        self.label_names = label_names

    def render(self, lines: list[str]) -> None:
        """Append the HELP and TYPE lines, then every sample line."""
        lines.append(f"# HELP {self.name} {escape_help(self.help_text)}")
        lines.append(f"# TYPE {self.name} {self.kind}")
        lines.extend(self._samples())

    def _samples(self) -> Iterable[str]:
        raise NotImplementedError

    def _series(self, suffix: str, labels: LabelValues, extra: tuple[str, str] | None = None) -> str:
        pairs = [
            f'{name}="{escape_label_value(value)}"'
            for name, value in zip(self.label_names, labels, strict=True)
        ]
        if extra is not None:
            pairs.append(f'{extra[0]}="{extra[1]}"')
        return f"{self.name}{suffix}{{{','.join(pairs)}}}" if pairs else f"{self.name}{suffix}"

    def _checked(self, labels: LabelValues) -> LabelValues:
        if len(labels) != len(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {labels}")
        return labels


class _Scalar(_Family):
    """A family whose series each have one value (counters and gauges)."""

    def __init__(self, name: str, help_text: str, label_names: tuple[str, ...] = ()) -> None:
        super().__init__(name, help_text, label_names)
        self._values: dict[LabelValues, float] = {}

    def _samples(self) -> Iterable[str]:
        return (f"{self._series('', labels)} {format_value(v)}" for labels, v in self._values.items())


class Counter(_Scalar):
    """A counter family: values only grow."""

    kind = "counter"

    def add(self, labels: LabelValues, amount: float = 1.0) -> None:
        """Add `amount` (0 creates the series) to the series with `labels`."""
        if amount < 0:
            raise ValueError(f"{self.name}: a counter cannot go down by {amount}")
        key = self._checked(labels)
        self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_Scalar):
    """A gauge family: values go anywhere."""

    kind = "gauge"

    def set(self, labels: LabelValues, value: float) -> None:
        """Set the series with `labels` to `value`."""
        self._values[self._checked(labels)] = value


@dataclass
class _Distribution:
    """The observations of one histogram series: per-bucket counts (the last is +Inf) and their sum."""

    counts: list[int]
    total: float = 0.0


class Histogram(_Family):
    """A histogram family with fixed upper bounds; +Inf is implicit."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, label_names: tuple[str, ...], bounds: Iterable[float]
    ) -> None:
        super().__init__(name, help_text, label_names)
        self.bounds = tuple(bounds)
        self._series_data: dict[LabelValues, _Distribution] = {}

    def observe(self, labels: LabelValues, count: int, draw: Draw) -> None:
        """Record `count` observations with values from `draw` (0 creates the series)."""
        data = self._series_data.setdefault(
            self._checked(labels), _Distribution([0] * (len(self.bounds) + 1))
        )
        for weight in _weights(count):
            value = draw()
            # `le` means "less than or equal", which bisect_left's first bound >= value matches.
            data.counts[bisect.bisect_left(self.bounds, value)] += weight
            data.total += value * weight

    def _samples(self) -> Iterable[str]:
        for labels, data in self._series_data.items():
            cumulative = 0
            for bound, count in zip((*self.bounds, math.inf), data.counts, strict=True):
                cumulative += count
                yield f"{self._series('_bucket', labels, ('le', format_value(bound)))} {cumulative}"
            yield f"{self._series('_sum', labels)} {format_value(data.total)}"
            yield f"{self._series('_count', labels)} {cumulative}"


class Summary(_Family):
    """A summary family: quantiles over a window of recent observations, and running sum and count."""

    kind = "summary"
    quantiles: ClassVar[tuple[float, ...]] = (0.0, 0.25, 0.5, 0.75, 1.0)

    def __init__(self, name: str, help_text: str, label_names: tuple[str, ...], window: int = 100) -> None:
        super().__init__(name, help_text, label_names)
        self._window = window
        self._recent: dict[LabelValues, deque[float]] = {}
        self._totals: dict[LabelValues, tuple[float, int]] = {}

    def observe(self, labels: LabelValues, count: int, draw: Draw) -> None:
        """Record `count` observations with values from `draw` (0 creates the series)."""
        key = self._checked(labels)
        recent = self._recent.setdefault(key, deque(maxlen=self._window))
        total, seen = self._totals.get(key, (0.0, 0))
        for weight in _weights(count):
            value = draw()
            recent.append(value)
            total, seen = total + value * weight, seen + weight
        self._totals[key] = (total, seen)

    def _samples(self) -> Iterable[str]:
        for labels, recent in self._recent.items():
            ordered = sorted(recent)
            for quantile in self.quantiles:
                value = ordered[round(quantile * (len(ordered) - 1))] if ordered else math.nan
                series = self._series("", labels, ("quantile", format_value(quantile)))
                yield f"{series} {format_value(value)}"
            total, seen = self._totals[labels]
            yield f"{self._series('_sum', labels)} {format_value(total)}"
            yield f"{self._series('_count', labels)} {seen}"


def _weights(count: int) -> list[int]:
    """`count` observations split into at most _MAX_DRAWS weights that add up to `count`."""
    draws = min(count, _MAX_DRAWS)
    if draws == 0:
        return []
    base, extra = divmod(count, draws)
    return [base + 1] * extra + [base] * (draws - extra)


def exponential_bounds(start: float, factor: float, count: int) -> tuple[float, ...]:
    """`count` upper bounds from `start`, each `factor` times the one before, as client_golang makes them."""
    return tuple(start * factor**index for index in range(count))


class Registry:
    """The families of one exposition, rendered sorted by name like client_golang's gatherer does."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def counter(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Counter:
        """A new counter family."""
        return self._register(Counter(name, help_text, labels))

    def gauge(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Gauge:
        """A new gauge family."""
        return self._register(Gauge(name, help_text, labels))

    def histogram(
        self, name: str, help_text: str, bounds: Iterable[float], labels: tuple[str, ...] = ()
    ) -> Histogram:
        """A new histogram family with `bounds` (without +Inf)."""
        return self._register(Histogram(name, help_text, labels, bounds))

    def summary(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Summary:
        """A new summary family."""
        return self._register(Summary(name, help_text, labels))

    def render(self) -> bytes:
        """The whole exposition."""
        lines: list[str] = []
        for name in sorted(self._families):
            self._families[name].render(lines)
        lines.append("")
        return "\n".join(lines).encode("utf-8")

    def _register(self, family: F) -> F:
        if family.name in self._families:
            raise ValueError(f"a family called {family.name} exists already")
        self._families[family.name] = family
        return family


APISERVER = "kube-apiserver"
SCHEDULER = "kube-scheduler"
CLOUD_CONTROLLER_MANAGER = "cloud-controller-manager"
_PROFILE = "default-scheduler"
_APISERVER_HOST = "172.16.0.10:6443"
_LOOPBACK_HOST = "[::1]:6443"
_GO_VERSION = "go1.24.6"


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
_METRICS_REQUEST = _non_resource("/metrics", 0.0, 0.02)
# fmt: off
_APISERVER_BOUNDS = (
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 60,
)
# fmt: on

# Extension points the scheduling framework runs for every pod it schedules, with a median latency.
_EXTENSION_POINTS = (
    ("PreFilter", 0.00004),
    ("Filter", 0.0003),
    ("PreScore", 0.00003),
    ("Score", 0.0002),
    ("Reserve", 0.00001),
    ("Permit", 0.000005),
    ("PreBind", 0.00002),
    ("Bind", 0.003),
    ("PostBind", 0.000004),
)

# Alibaba Cloud OpenAPI calls the cloud-controller-manager makes: service, action, calls per second, median.
_ALIBABA_CALLS = (
    ("slb", "DescribeLoadBalancers", 0.05, 0.12),
    ("slb", "DescribeLoadBalancerAttribute", 0.05, 0.09),
    ("slb", "DescribeVServerGroupAttribute", 0.03, 0.08),
    ("slb", "SetVServerGroupAttribute", 0.005, 0.25),
    ("ecs", "DescribeInstances", 0.02, 0.15),
    ("ecs", "DescribeNetworkInterfaces", 0.01, 0.1),
    ("vpc", "DescribeRouteTableList", 0.01, 0.11),
    ("vpc", "CreateRouteEntry", 0.001, 0.4),
)
# Errors those calls return, with the message verbatim: quotes, a backslash and a newline among them.
_ALIBABA_ERRORS = (
    (
        "vpc",
        "CreateRouteEntry",
        "InvalidVSwitchId.NotFound",
        'The specified parameter "VSwitchId" is not valid.',
    ),
    (
        "slb",
        "SetVServerGroupAttribute",
        "InvalidParameter.TagValue",
        r"TagValue must match ^[\w.:/=+-]{1,128}$",
    ),
    (
        "ecs",
        "DescribeInstances",
        "Throttling.User",
        "Request was denied due to user flow control.\nRetry later.",
    ),
)

# Work queues: component, queue name, adds per second, median wait, median processing time.
_WORK_QUEUES = (
    (CLOUD_CONTROLLER_MANAGER, "service", 0.05, 0.00002, 0.4),
    (CLOUD_CONTROLLER_MANAGER, "node", 0.1, 0.00001, 0.05),
    (CLOUD_CONTROLLER_MANAGER, "route", 0.02, 0.00001, 0.3),
    (APISERVER, "APIServiceRegistrationController", 0.01, 0.00003, 0.0002),
    (APISERVER, "DiscoveryController", 0.02, 0.00002, 0.001),
    (APISERVER, "crd_finalizer", 0.001, 0.00001, 0.00005),
)

# Each component's client of kube-apiserver: host, then verb and requests per second.
_REST_CLIENTS = (
    (SCHEDULER, _APISERVER_HOST, (("GET", 0.3), ("PUT", 0.5), ("POST", 0.7), ("PATCH", 0.02))),
    (CLOUD_CONTROLLER_MANAGER, _APISERVER_HOST, (("GET", 0.3), ("PATCH", 0.2), ("PUT", 0.5))),
    (APISERVER, _LOOPBACK_HOST, (("GET", 0.05), ("PUT", 0.3))),
)
_REST_CLIENT_BOUNDS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)


@dataclass(frozen=True, slots=True)
class _Process:
    """A control-plane process: CPU cores it uses, memory, goroutines, threads, GC cycles per second."""

    component: str
    cpu_cores: float
    resident_bytes: float
    goroutines: int
    threads: int
    gc_rate: float


_PROCESSES = (
    _Process(APISERVER, 0.25, 620e6, 2400, 22, 0.2),
    _Process(SCHEDULER, 0.02, 65e6, 180, 12, 0.03),
    _Process(CLOUD_CONTROLLER_MANAGER, 0.01, 48e6, 140, 11, 0.02),
)


class _Dice:
    """The simulation's randomness, seeded so a run can be repeated."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)  # noqa: S311 -- simulated load, not cryptography

    def events(self, rate: float, seconds: float) -> int:
        """How many events with `rate` per second happen in `seconds`, roughly Poisson distributed."""
        mean = rate * seconds
        if mean > _NORMAL_ENOUGH:
            # Poisson's normal approximation: a long step does not land exactly on the mean every time.
            mean = max(self._random.gauss(mean, math.sqrt(mean)), 0.0)
        return int(mean + self._random.random())

    def latency(self, median: float) -> Draw:
        """Draws of a log-normal latency around `median`, the usual shape of request durations."""
        return lambda: self._random.lognormvariate(math.log(median), _MEDIAN_SPREAD)

    def around(self, value: float, spread: float = 0.03) -> float:
        """`value` give or take `spread` (a fraction of it)."""
        return value * self._random.uniform(1 - spread, 1 + spread)

    def between(self, low: int, high: int) -> int:
        """A whole number from `low` to `high` inclusive."""
        return self._random.randint(low, high)


class _Scheduler:
    """kube-scheduler: its queues, attempts, and the latency of its framework's extension points."""

    def __init__(self, registry: Registry) -> None:
        self.pending = registry.gauge(
            "scheduler_pending_pods",
            "[STABLE] Pods waiting to be scheduled, by the queue they wait in.",
            ("queue",),
        )
        self.attempts = registry.counter(
            "scheduler_schedule_attempts_total",
            "[STABLE] Attempts to schedule a pod, by result: 'error' is a scheduler fault, "
            "'unschedulable' means no node fits.",
            ("profile", "result"),
        )
        self.attempt_duration = registry.histogram(
            "scheduler_scheduling_attempt_duration_seconds",
            "[STABLE] Time one scheduling attempt takes, algorithm and binding included.",
            exponential_bounds(0.001, 2, 15),
            ("profile", "result"),
        )
        self.sli_duration = registry.histogram(
            "scheduler_pod_scheduling_sli_duration_seconds",
            "[BETA] Time from a pod entering the scheduling queue to being scheduled, over all attempts.",
            exponential_bounds(0.01, 2, 20),
            ("attempts",),
        )
        self.extension_points = registry.histogram(
            "scheduler_framework_extension_point_duration_seconds",
            "[STABLE] Time to run all plugins of one extension point.",
            exponential_bounds(0.0001, 2, 12),
            ("extension_point", "profile", "status"),
        )
        self.incoming = registry.counter(
            "scheduler_queue_incoming_pods_total",
            "[STABLE] Pods added to the scheduling queues, by the event that added them and the queue.",
            ("event", "queue"),
        )
        self.cache_size = registry.gauge(
            "scheduler_cache_size",
            "[ALPHA] Nodes, pods and assumed pods in the scheduler's cache.",
            ("type",),
        )
        self.unschedulable = registry.gauge(
            "scheduler_unschedulable_pods",
            "[ALPHA] Unschedulable pods by the plugin that rejected them.",
            ("plugin", "profile"),
        )

    def step(self, dice: _Dice, seconds: float) -> None:
        """Schedule the pods that arrived in `seconds`."""
        results = {"scheduled": 0.4, "unschedulable": 0.02, "error": 0.001}
        counts = {result: dice.events(rate, seconds) for result, rate in results.items()}
        for result, count in counts.items():
            self.attempts.add((_PROFILE, result), count)
            median = 0.0002 if result == "error" else 0.003
            self.attempt_duration.observe((_PROFILE, result), count, dice.latency(median))
        for point, median in _EXTENSION_POINTS:
            self.extension_points.observe(
                (point, _PROFILE, "Success"), counts["scheduled"], dice.latency(median)
            )
        postfilter = ("PostFilter", _PROFILE, "Unschedulable")
        self.extension_points.observe(postfilter, counts["unschedulable"], dice.latency(0.0005))
        for attempts, share, median in (
            ("1", 0.92, 0.02),
            ("2", 0.06, 2.5),
            ("3", 0.015, 9.0),
            ("4", 0.005, 40.0),
        ):
            self.sli_duration.observe((attempts,), dice.events(0.4 * share, seconds), dice.latency(median))
        self.incoming.add(("PodAdd", "active"), counts["scheduled"] + counts["unschedulable"])
        self.incoming.add(("ScheduleAttemptFailure", "unschedulable"), counts["unschedulable"])
        self.incoming.add(("UnschedulableTimeout", "backoff"), dice.events(0.005, seconds))
        self.incoming.add(("NodeAdd", "active"), dice.events(0.0002, seconds))
        for queue, high in (("active", 3), ("backoff", 1), ("unschedulable", 4), ("gated", 0)):
            self.pending.set((queue,), dice.between(0, high))
        for kind, value in (
            ("nodes", 12),
            ("pods", 240 + dice.between(-6, 6)),
            ("assumed_pods", dice.between(0, 2)),
        ):
            self.cache_size.set((kind,), value)
        for plugin, high in (("NodeResourcesFit", 3), ("TaintToleration", 1), ("VolumeBinding", 0)):
            self.unschedulable.set((plugin, _PROFILE), dice.between(0, high))


class _CloudControllerManager:
    """Alibaba Cloud's cloud-controller-manager: its OpenAPI calls and the service controller."""

    def __init__(self, registry: Registry) -> None:
        self.api_duration = registry.histogram(
            "cloudprovider_alibaba_api_request_duration_seconds",
            "[ALPHA] Latency of Alibaba Cloud OpenAPI requests, by action and cloud service.",
            (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            ("request", "service"),
        )
        self.api_errors = registry.counter(
            "cloudprovider_alibaba_api_request_errors_total",
            "[ALPHA] Alibaba Cloud OpenAPI requests that failed, by error code.",
            ("code", "request", "service"),
        )
        self.last_error = registry.gauge(
            "cloudprovider_alibaba_api_last_error_timestamp_seconds",
            "[ALPHA] When an OpenAPI error was last seen; the message is kept verbatim.",
            ("code", "message", "request", "service"),
        )
        self.lb_syncs = registry.counter(
            "service_controller_loadbalancer_sync_total",
            "[ALPHA] Load balancer syncs of the service controller.",
        )
        self.nodesync_errors = registry.counter(
            "service_controller_nodesync_error_total",
            "[ALPHA] Node syncs of load balancer backends that failed.",
        )
        self.nodesync_latency = registry.histogram(
            "service_controller_nodesync_latency_seconds",
            "[ALPHA] Time to sync the nodes behind every load balancer.",
            exponential_bounds(1, 2, 15),
        )

    def start(self, now: float) -> None:
        """Errors seen before the simulation starts, so their escaped messages are in every exposition."""
        for service, request, code, message in _ALIBABA_ERRORS:
            self.last_error.set((code, message, request, service), now)

    def step(self, dice: _Dice, seconds: float, now: float) -> None:
        """Make the cloud calls of `seconds` and sync load balancers."""
        for service, request, rate, median in _ALIBABA_CALLS:
            self.api_duration.observe((request, service), dice.events(rate, seconds), dice.latency(median))
        for service, request, code, message in _ALIBABA_ERRORS:
            failures = dice.events(0.0005, seconds)
            self.api_errors.add((code, request, service), failures)
            if failures:
                self.last_error.set((code, message, request, service), now)
        self.lb_syncs.add((), dice.events(0.01, seconds))
        self.nodesync_errors.add((), dice.events(0.0002, seconds))
        self.nodesync_latency.observe((), dice.events(1 / 120, seconds), dice.latency(3.0))


class _ApiServer:
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
            "apiserver_storage_objects",
            "[STABLE] Objects stored, by resource; -1 if they could not be counted.",
            ("resource",),
        )

    def step(self, dice: _Dice, seconds: float) -> None:
        """Serve the requests of `seconds`, then the aggregator's request for /metrics."""
        for request in _API_REQUESTS:
            served = 0
            for code, share in request.codes:
                count = dice.events(request.rate * share, seconds)
                self.requests.add((code, *request.labels), count)
                served += count
            # Watches last as long as the client wants; kube-apiserver keeps them out of this latency.
            if request.verb != "WATCH":
                self.duration.observe(request.labels, served, dice.latency(request.median_seconds))
        self.requests.add(("200", *_METRICS_REQUEST.labels), 1)
        self.duration.observe(_METRICS_REQUEST.labels, 1, dice.latency(_METRICS_REQUEST.median_seconds))
        self.inflight.set(("mutating",), dice.between(0, 3))
        self.inflight.set(("readOnly",), dice.between(1, 8))
        for resource, count in (("pods", 240), ("nodes", 12), ("events.events.k8s.io", 900), ("leases", 18)):
            self.objects.set((resource,), count + dice.between(0, count // 20))


class _Shared:
    """Families every component exports, told apart by a `component` label."""

    def __init__(self, registry: Registry) -> None:
        self.leader = registry.gauge(
            "leader_election_master_status",
            "[ALPHA] 1 while this instance leads, 0 otherwise.",
            ("component", "name"),
        )
        self.queue_depth = registry.gauge(
            "workqueue_depth", "[ALPHA] Items waiting in the work queue.", ("component", "name")
        )
        self.queue_adds = registry.counter(
            "workqueue_adds_total", "[ALPHA] Items added to the work queue.", ("component", "name")
        )
        self.queue_retries = registry.counter(
            "workqueue_retries_total", "[ALPHA] Items put back into the work queue.", ("component", "name")
        )
        workqueue_bounds = exponential_bounds(1e-8, 10, 10)
        self.queue_wait = registry.histogram(
            "workqueue_queue_duration_seconds",
            "[ALPHA] Time an item waits in the work queue before it is taken.",
            workqueue_bounds,
            ("component", "name"),
        )
        self.queue_work = registry.histogram(
            "workqueue_work_duration_seconds",
            "[ALPHA] Time to process an item taken from the work queue.",
            workqueue_bounds,
            ("component", "name"),
        )
        self.rest_requests = registry.counter(
            "rest_client_requests_total",
            "[ALPHA] HTTP requests to kube-apiserver, by status code, method and host.",
            ("code", "component", "host", "method"),
        )
        self.rest_duration = registry.histogram(
            "rest_client_request_duration_seconds",
            "[ALPHA] Latency of HTTP requests to kube-apiserver, by verb and host.",
            _REST_CLIENT_BOUNDS,
            ("component", "host", "verb"),
        )

    def step(self, dice: _Dice, seconds: float) -> None:
        """Run the components' work queues and API clients for `seconds`."""
        self.leader.set((SCHEDULER, "kube-scheduler"), 1)
        self.leader.set((CLOUD_CONTROLLER_MANAGER, "cloud-controller-manager"), 1)
        for component, name, rate, wait, work in _WORK_QUEUES:
            adds = dice.events(rate, seconds)
            self.queue_adds.add((component, name), adds)
            self.queue_retries.add((component, name), dice.events(rate / 50, seconds))
            self.queue_depth.set((component, name), dice.between(0, 1))
            self.queue_wait.observe((component, name), adds, dice.latency(wait))
            self.queue_work.observe((component, name), adds, dice.latency(work))
        for component, host, verbs in _REST_CLIENTS:
            for verb, rate in verbs:
                count = dice.events(rate, seconds)
                conflicts = dice.events(rate / 400, seconds) if verb == "PUT" else 0
                code = "201" if verb == "POST" else "200"
                self.rest_requests.add((code, component, host, verb), count)
                if verb == "PUT":
                    self.rest_requests.add(("409", component, host, verb), conflicts)
                self.rest_duration.observe((component, host, verb), count + conflicts, dice.latency(0.006))


class _Runtime:
    """process_* and go_* of every component."""

    def __init__(self, registry: Registry) -> None:
        def per_component(name: str, help_text: str) -> Gauge:
            return registry.gauge(name, help_text, ("component",))

        self.cpu = registry.counter(
            "process_cpu_seconds_total", "User and system CPU time spent, in seconds.", ("component",)
        )
        self.received = registry.counter(
            "process_network_receive_bytes_total", "Bytes received over the network.", ("component",)
        )
        self.sent = registry.counter(
            "process_network_transmit_bytes_total", "Bytes sent over the network.", ("component",)
        )
        self.resident = per_component("process_resident_memory_bytes", "Resident memory size in bytes.")
        self.virtual = per_component("process_virtual_memory_bytes", "Virtual memory size in bytes.")
        self.open_fds = per_component("process_open_fds", "Open file descriptors.")
        self.max_fds = per_component("process_max_fds", "Most file descriptors the process may open.")
        self.start_time = per_component(
            "process_start_time_seconds", "When the process started, in Unix time."
        )
        self.goroutines = per_component("go_goroutines", "Goroutines that currently exist.")
        self.threads = per_component("go_threads", "OS threads created.")
        self.heap = per_component("go_memstats_heap_alloc_bytes", "Heap bytes allocated and still in use.")
        self.info = registry.gauge(
            "go_info", "Information about the Go environment.", ("component", "version")
        )
        self.gc_pauses = registry.summary(
            "go_gc_duration_seconds",
            "Stop-the-world pause time of garbage collection cycles.",
            ("component",),
        )

    def start(self, started: float) -> None:
        """Set what stays fixed while the processes run."""
        for offset, process in enumerate(_PROCESSES):
            key = (process.component,)
            self.start_time.set(key, round(started + 7.31 * offset, 2))
            self.max_fds.set(key, 1048576)
            self.info.set((process.component, _GO_VERSION), 1)

    def step(self, dice: _Dice, seconds: float) -> None:
        """Spend `seconds` of CPU, traffic and garbage collection."""
        for process in _PROCESSES:
            key = (process.component,)
            self.cpu.add(key, dice.around(process.cpu_cores * seconds, 0.2))
            self.received.add(key, dice.events(process.cpu_cores * 4e5, seconds))
            self.sent.add(key, dice.events(process.cpu_cores * 9e5, seconds))
            resident = round(dice.around(process.resident_bytes))
            self.resident.set(key, resident)
            self.heap.set(key, round(resident * dice.around(0.55, 0.2)))
            self.virtual.set(key, round(resident * 2.6 + 1.2e9))
            self.open_fds.set(key, round(dice.around(process.goroutines / 20, 0.1)))
            self.goroutines.set(key, round(dice.around(process.goroutines)))
            self.threads.set(key, process.threads)
            self.gc_pauses.observe(key, dice.events(process.gc_rate, seconds), dice.latency(0.00008))


class ControlPlaneSimulation:
    """The expositions of a managed control plane whose counters grow with time and with every scrape."""

    def __init__(self, seed: int = 0, *, uptime_seconds: float = 6 * 3600.0) -> None:
        self._dice = _Dice(seed)
        self._uptime = uptime_seconds
        self._last: float | None = None
        self._registry = Registry()
        self._scheduler = _Scheduler(self._registry)
        self._cloud = _CloudControllerManager(self._registry)
        self._apiserver = _ApiServer(self._registry)
        self._shared = _Shared(self._registry)
        self._runtime = _Runtime(self._registry)

    def exposition(self, now: float) -> bytes:
        """The text format body at Unix time `now`; a `now` earlier than the last one counts as no time."""
        if self._last is None:
            # The first exposition finds the control plane already running for a while, with history.
            started = now - self._uptime
            self._cloud.start(started)
            self._runtime.start(started)
            self._last = started
        seconds = max(now - self._last, 0.0)
        self._last = max(now, self._last)
        self._scheduler.step(self._dice, seconds)
        self._cloud.step(self._dice, seconds, self._last)
        self._apiserver.step(self._dice, seconds)
        self._shared.step(self._dice, seconds)
        self._runtime.step(self._dice, seconds)
        return self._registry.render()
