"""kube-scheduler's families in the simulated control plane: its queues, attempts and plugin latency."""

from __future__ import annotations

from relay.demo.dice import Dice
from relay.demo.textformat import Registry, exponential_bounds

_PROFILE = "default-scheduler"

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


class Scheduler:
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

    def step(self, dice: Dice, seconds: float) -> None:
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
