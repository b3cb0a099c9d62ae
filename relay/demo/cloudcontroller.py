"""Alibaba Cloud's cloud-controller-manager in the simulated control plane: OpenAPI calls, LB syncs."""

from __future__ import annotations

from relay.demo.dice import Dice
from relay.demo.textformat import Registry, exponential_bounds

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


class CloudControllerManager:
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

    def step(self, dice: Dice, seconds: float, now: float) -> None:
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
